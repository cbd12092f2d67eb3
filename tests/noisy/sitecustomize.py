"""Put on PYTHONPATH of an engine under test: a badly behaved environment that writes to stdout at
interpreter start-up (before the engine takes its streams over) and keeps printing from a thread
while jobs run.  The protocol stream must stay clean."""

import os
import sys
import threading
import time

os.write(1, b"noisy start-up banner on the real stdout\n")


def _chatter():
    for i in range(600):
        time.sleep(0.2)
        print(f"stray print {i} from a library", flush=True)
        os.write(1, f"stray raw write {i} to fd 1\n".encode())
        sys.stdout.write("")


if os.environ.get("DD_TEST_NOISE") == "1":
    threading.Thread(target=_chatter, daemon=True).start()
