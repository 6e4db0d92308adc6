"""Sound a buzzer (or light an LED) on a GPIO pin when the drowsiness monitor raises an event.

    python app.py --camera picamera2 --on-event "python docs/examples/buzzer.py"
    python predict.py --video picamera2 --on-event "python docs/examples/buzzer.py"

The monitor runs this once per event, the event as one JSON line on standard input. Wiring:
an active buzzer (or an LED with a 330-ohm resistor) between GPIO 17 (pin 11) and ground
(pin 9); BUZZER_PIN chooses another GPIO. gpiozero is the Raspberry Pi's GPIO library
(Raspberry Pi OS ships it as python3-gpiozero; a venv made with --system-site-packages sees
it). Events and what they do here:

- drowsy, long_closure: five short beeps;
- no_face: one long beep (nobody in front of the camera);
- anything else: nothing.
"""

import json
import os
import sys

from gpiozero import Buzzer

PATTERNS = {  # event type -> (seconds on, seconds off, beeps)
    "drowsy": (0.2, 0.1, 5),
    "long_closure": (0.2, 0.1, 5),
    "no_face": (1.0, 0.0, 1),
}


def main() -> int:
    event = json.loads(sys.stdin.readline())
    pattern = PATTERNS.get(event.get("type"))
    if pattern is None:
        return 0
    on_s, off_s, beeps = pattern
    buzzer = Buzzer(int(os.environ.get("BUZZER_PIN", "17")))
    buzzer.beep(on_time=on_s, off_time=off_s, n=beeps, background=False)  # returns when done
    buzzer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
