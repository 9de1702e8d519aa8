"""Stand-in for ``rpm-ostree kargs`` (test use only).

rpm-ostree is not packaged for Debian, so tests run this instead. It keeps the
default deployment's kernel arguments in <CONFIDENTIAL_GPU_ROOT>/.standin-rpm-ostree-kargs
(one line) and follows rpm-ostree(1) ``kargs`` and libostree's OstreeKernelArgs:

- without options it prints the kernel arguments of the default deployment (the
  one the next boot uses) on one line;
- ``--delete=KEY=VALUE`` deletes that key/value pair (one occurrence);
  ``--delete=KEY`` deletes the key when it has only one value, and fails with
  "Multiple values for key" otherwise; a missing argument fails ("No karg ... found");
- ``--replace=KEY=VALUE=NEWVALUE`` replaces that value, ``--replace=KEY=VALUE`` the
  key's only value;
- ``--append=KEY=VALUE`` appends (a key may repeat);
- in one call deletions apply first, then replacements, then appends, and the
  change is queued for the next boot ("Staging deployment... done").
"""

import sys

import _standin

STATE = "/.standin-rpm-ostree-kargs"


def delete(words, arg):
    key, sep, value = arg.partition("=")
    matching = [w for w in words if _standin.key_of(w) == key]
    if not matching:
        _standin.die("error: No key '%s' found" % key)
    if len(matching) == 1:
        if sep and matching[0] != arg:
            _standin.die("error: No karg '%s' found" % arg)
        words.remove(matching[0])
        return
    target = arg if sep else key
    if target not in words:
        _standin.die(("error: No karg '%s' found" if sep else "error: Multiple values for key '%s' found") % arg)
    words.remove(target)


def replace(words, arg):
    key, _sep, rest = arg.partition("=")
    old, sep, new = rest.partition("=")
    matching = [i for i, w in enumerate(words) if _standin.key_of(w) == key]
    if sep:
        target = "%s=%s" % (key, old)
        if target not in words:
            _standin.die("error: No karg '%s' found" % target)
        words[words.index(target)] = "%s=%s" % (key, new)
    elif len(matching) == 1:
        words[matching[0]] = arg
    else:
        _standin.die("error: Multiple values for key '%s' found" % key)


def main(argv):
    _standin.record("rpm-ostree", argv)
    if not argv or argv[0] != "kargs":
        _standin.die("rpm-ostree stand-in: only the kargs command is supported")
    state = _standin.host(STATE)
    words = _standin.split_words(state.read_text())
    ops = {"--delete": [], "--replace": [], "--append": []}
    for arg in argv[1:]:
        name, sep, value = arg.partition("=")
        if name not in ops or not sep:
            _standin.die("error: Unknown option %s" % arg)
        ops[name].append(value)
    if not any(ops.values()):
        print(" ".join(words))
        return
    for arg in ops["--delete"]:
        delete(words, arg)
    for arg in ops["--replace"]:
        replace(words, arg)
    words += ops["--append"]
    state.write_text(" ".join(words) + "\n")
    print("Staging deployment... done\nChanges queued for next boot. Run \"systemctl reboot\" to start a reboot")


if __name__ == "__main__":
    main(sys.argv[1:])
