"""Write the FST files of upstream CosyVoice's text normalisation (wetext) into a directory.

    python ops/docker/fetch_wetext.py /opt/wetext

When CosyVoice loads, wetext downloads these files from ModelScope; offline that fails, and upstream
then turns text normalisation off without a word. A worker must never download anything at run time,
so the files are fetched once, when the image (or the upstream test environment) is built, and the
worker reads them from COSYVOICE_WETEXT_DIR (synth_worker/engines/cosyvoice3.py). They come from the
WeTextProcessing wheel on PyPI, whose grammars wetext's files are compiled from, laid out as wetext
expects (`zh/tn/tagger.fst`, …). Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "WeTextProcessing==1.2.0"
# path in the wheel -> path under the directory, as wetext.Normalizer(remove_erhua=False) reads them
FILES = {
    "tn/zh_tn_tagger.fst": "zh/tn/tagger.fst",
    "tn/zh_tn_verbalizer.fst": "zh/tn/verbalizer.fst",
    "tn/en_tn_tagger.fst": "en/tn/tagger.fst",
    "tn/en_tn_verbalizer.fst": "en/tn/verbalizer.fst",
}


def fetch(directory: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", scratch, WHEEL],
            check=True,
        )  # fmt: skip
        [wheel] = Path(scratch).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for source, target in FILES.items():
                path = directory / target
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(source))
    print(f"wetext FST files from {WHEEL} in {directory}: {', '.join(FILES.values())}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: fetch_wetext.py DIR")
    fetch(Path(sys.argv[1]))
