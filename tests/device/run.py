# A tiny test runner for the device suite: runs every test_* function of the given modules
# under MicroPython or CPython (no pytest on a board). Each test takes `bundle(name) -> bytes`
# (NAME.mfa, or the file NAME itself when it has a suffix: hello.mfs, operator.pub).
#
#   micropython -X heapsize=110k tests/device/run.py BUNDLE_DIR test_supervisor_device
#
# Prints one line per test and a summary; exits 1 if any failed.
import gc
import sys

_here = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
sys.path.insert(0, _here)

from microfang.firmware import port  # noqa: E402

port.collect_often()  # as a board does from its first import on (firmware/main.py)


def main():
    folder = sys.argv[1]
    names = sys.argv[2:]

    def bundle(name):
        # "hello": hello.mfa; a name with a suffix is the file itself (hello.mfs, operator.pub)
        with open(folder + "/" + name + ("" if "." in name else ".mfa"), "rb") as f:
            return f.read()

    passed = failed = 0
    for module_name in names:
        module = __import__(module_name)
        for name in sorted(dir(module)):
            if not name.startswith("test_"):
                continue
            gc.collect()  # each test starts from a collected heap, as a board's steady state
            try:
                getattr(module, name)(bundle)
                passed += 1
                print("PASS", name)
            except Exception as e:  # report every failure, keep running the rest
                failed += 1
                print("FAIL", name, "%s: %s" % (type(e).__name__, e))
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


main()
