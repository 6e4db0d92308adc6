"""Maintenance tools, run from the repository root as ``python -m tools.NAME``.

- ``pi_emulation``: run or compare ``predict.py`` on emulated Raspberry Pi cores (QEMU)
- ``tflite_to_keras``: rebuild Keras weights from a float32 TFLite file
- ``gpu_memory``: the largest training batch for a GPU's memory, estimated per architecture
"""
