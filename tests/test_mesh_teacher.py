"""tools/mesh_teacher.py: the imglab file it writes, the map it fits, and the teacher's points
for unannotated photos on real faces."""

import os

import numpy as np
import pytest

import dataset
import evaluate
import geometry
import predict
from conftest import TEST_XML, require_data
from tools import mesh_teacher as mt


def test_imglab_file_reads_back_as_written(tmp_path):
    points = np.random.default_rng(3).uniform(10, 90, (68, 2))
    mt.write_imglab(tmp_path / "labels.xml", [("images/a b.png", (10.4, 20.6, 50.0, 50.2), points)])
    faces = dataset.parse_dlib_xml(tmp_path / "labels.xml")
    assert len(faces) == 1
    assert faces[0].image_path == os.path.abspath(tmp_path / "images/a b.png")
    assert faces[0].box_xywh == (10.0, 21.0, 50.0, 50.0)
    np.testing.assert_allclose(faces[0].landmarks_px, points, atol=0.005)


@pytest.fixture(scope="module")
def mesh_model():
    return mt.default_mesh_model()  # models/face_mesh.tflite ships with the repository


@pytest.fixture(scope="module")
def fitted_map(mesh_model, subset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh") / "map.npz"
    faces = mt.training_faces(subset_dir, 42, 0.05, "train")[:300]
    mesh = mt.FaceMesh(mesh_model)
    meshes = mt.meshes_of(faces, mesh)
    features = [mt.mesh_features(m, mt.mesh_frame(m[:, :2])) for m in meshes]
    targets = [mt.to_frame(f.landmarks_px, mt.mesh_frame(m[:, :2])).ravel() for m, f in zip(meshes, faces)]
    mt.MeshTo68(mt.fit_ridge(np.stack(features), np.stack(targets), alpha=0.1)).save(out)
    return out


def test_mesh_mapped_to_68_points_lands_on_real_faces(mesh_model, fitted_map, subset_dir):
    faces = dataset.parse_dlib_xml(subset_dir / TEST_XML)[:20]
    mesh = mt.FaceMesh(mesh_model)
    mapper = mt.MeshTo68.load(fitted_map)
    mapped = np.stack([mapper(mesh.run(dataset.read_image_bgr(f.image_path), f.box_xywh)) for f in faces])
    truth = np.stack([f.landmarks_px for f in faces])
    # fitted on 300 training faces only, yet within 6 % of the eye distance on unseen faces
    assert evaluate.nme(mapped, truth).mean() < 0.06


def test_label_writes_the_mean_of_both_networks_for_unannotated_photos(mesh_model, fitted_map, data_dir, tmp_path):
    photos = require_data(data_dir / "unlabelled_faces" / "utkface", "unlabelled_faces/utkface")
    out = tmp_path / "teacher"
    assert mt.main(["label", "--map", str(fitted_map), "--images", str(photos), "--out", str(out),
                    "--limit", "3", "--mesh-model", str(mesh_model)]) == 0
    faces = dataset.parse_dlib_xml(out / "teacher_labels.xml")
    assert 1 <= len(faces) <= 3
    mesh = mt.FaceMesh(mesh_model)
    mapper = mt.MeshTo68.load(fitted_map)
    own = predict.LandmarkModel(mt.parse_args(["label", "--map", "x", "--images", "x", "--out", "x"]).model)
    for face in faces:
        image = dataset.read_image_bgr(face.image_path)
        # the padded photo holds the whole face, and the box follows the training convention
        dataset.check_face(face, image.shape)
        np.testing.assert_allclose(face.box_xywh, np.round(geometry.box_from_landmarks(face.landmarks_px)), atol=0.51)
        mapped = mapper(mesh.run(image, mt.unlabelled_box(image.shape)))
        roll = geometry.roll_from_landmarks(mapped)
        ours = own.predict_face(image, geometry.box_from_landmarks_upright(mapped, roll), roll).landmarks_px
        np.testing.assert_allclose(face.landmarks_px, (mapped + ours) / 2, atol=0.01)
