"""Stand-in for grubby as shipped on EL 9 / Fedora (grubby-bls, test use only).

grubby is not packaged for Debian, so tests run this instead. It follows
grubby(8) and the grubby-bls script for the options the module uses, on
BootLoaderSpec entries in <CONFIDENTIAL_GPU_ROOT>/boot/loader/entries/*.conf:

- entries are listed newest version first (grubby-bls sorts with rpm-sort, then tac);
  the default is the entry whose id (file name without .conf) or title is
  ``saved_entry`` in /boot/grub2/grubenv, else index 0;
- ``--info=ALL|DEFAULT|<index>`` prints, per entry, ``index=N``, ``kernel="..."``,
  ``args="..."`` (the options without root=), ``root="..."`` when there is one,
  ``initrd="..."``, ``title="..."`` and ``id="..."``;
- ``--default-index`` prints the default entry's index;
- ``--update-kernel=ALL|DEFAULT|<index>`` with ``--remove-args=ARGS`` and/or
  ``--args=ARGS``: each word of --remove-args that is ``key=value`` removes that
  argument, a bare ``key`` removes every argument with that key; then every key of
  --args is removed and the --args words are appended, in order ("If an argument
  already exists the new value will replace the old values").
"""

import re
import sys

import _standin


def version_key(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load():
    directory = _standin.host("/boot/loader/entries")
    entries = []
    for path in sorted(directory.glob("*.conf"), key=lambda p: version_key(p.stem), reverse=True):
        fields = {}
        for line in path.read_text().splitlines():
            key, _sep, value = line.strip().partition(" ")
            fields.setdefault(key, value.strip())
        entries.append({"path": path, "id": path.stem, "fields": fields})
    return entries


def default_index(entries):
    env = _standin.host("/boot/grub2/grubenv")
    saved = ""
    if env.exists():
        for line in env.read_text().splitlines():
            if line.startswith("saved_entry="):
                saved = line.split("=", 1)[1]
    for index, entry in enumerate(entries):
        if saved and saved in (entry["id"], entry["fields"].get("title")):
            return index
    return 0


def select(entries, which):
    if which == "ALL":
        return list(range(len(entries)))
    if which == "DEFAULT":
        return [default_index(entries)]
    if which.isdigit() and int(which) < len(entries):
        return [int(which)]
    raise SystemExit("The param %s is incorrect" % which)


def info(entries, which):
    for index in select(entries, which):
        fields = entries[index]["fields"]
        words = _standin.split_words(fields.get("options", ""))
        root = next((w.split("=", 1)[1] for w in words if w.startswith("root=")), "")
        args = " ".join(w for w in words if not w.startswith("root="))
        print("index=%d" % index)
        print('kernel="%s"' % fields.get("linux", ""))
        print('args="%s"' % args)
        if root:
            print('root="%s"' % root)
        print('initrd="%s"' % fields.get("initrd", ""))
        print('title="%s"' % fields.get("title", ""))
        print('id="%s"' % entries[index]["id"])


def update_args(words, remove, add):
    for word in remove:
        if "=" in word:
            if word in words:
                words.remove(word)
        else:
            words = [w for w in words if _standin.key_of(w) != word]
    for key in {_standin.key_of(word) for word in add}:
        words = [w for w in words if _standin.key_of(w) != key]
    return words + add


def update(entries, which, remove, add):
    for index in select(entries, which):
        path = entries[index]["path"]
        lines = path.read_text().splitlines()
        out = []
        for line in lines:
            if line.startswith("options "):
                words = update_args(_standin.split_words(line[len("options "):]), remove, add)
                line = "options " + " ".join(words)
            out.append(line)
        path.write_text("\n".join(out) + "\n")


def main(argv):
    _standin.record("grubby", argv)
    options = {}
    for arg in argv:
        name, sep, value = arg.partition("=")
        if name not in ("--info", "--default-index", "--update-kernel", "--args", "--remove-args"):
            _standin.die('grubby: invalid option "%s"' % name)
        options[name] = value if sep else True
    entries = load()
    if "--default-index" in options:
        print(default_index(entries))
    elif "--info" in options:
        info(entries, options["--info"])
    elif "--update-kernel" in options:
        update(entries, options["--update-kernel"], _standin.split_words(options.get("--remove-args", "")),
               _standin.split_words(options.get("--args", "")))
    else:
        _standin.die("no action specified")


if __name__ == "__main__":
    main(sys.argv[1:])
