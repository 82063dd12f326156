"""The README's curl walk-through creates every dataset before a step names it (a step naming a
dataset that does not exist yet answers 404 to a reader who follows it in order)."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_readme_walkthrough_creates_each_dataset_before_using_it():
    section = (ROOT / "README.md").read_text().split("## Walk-through with curl", 1)[1]
    script = re.search(r"```sh\n(.*?)```", section, flags=re.S).group(1)
    created: set[str] = set()
    used_before_created = []
    # Each step starts with `curl`; a step may continue over several lines.
    for step in re.split(r"\n(?=curl )", script):
        create = re.search(r'-XPOST \$API/datasets(?!/)[\s\S]*?"name": "([\w-]+)"', step)
        names = set(re.findall(r"\$API/datasets/([\w-]+)", step))
        for listed in re.findall(r'"dataset_ids": \[([^\]]*)\]', step):
            names.update(re.findall(r'"([\w-]+)"', listed))
        used_before_created += sorted(names - created - {"batch"})
        if create:
            created.add(create.group(1))
    assert created, "the walk-through creates no dataset"
    assert not used_before_created, (f"steps name datasets before creating them: "
                                     f"{used_before_created}")
