"""A dataset written by `vlsm-prepare` is found by name in a fresh process (through its `prepared.json`), given the
data root; a malformed `prepared.json` fails naming the file; an unknown name still lists the known ones."""
import json, os, pickle, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import vlsm_adapter
from vlsm_adapter.data import DATASETS, PAPER_NAMES, PREPARED_FILE, read_prepared, resolve_dataset

PKG_ROOT = str(Path(vlsm_adapter.__file__).resolve().parents[1])   # the fresh interpreter imports this same package


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VLSM_DATA"}
    env["PYTHONPATH"] = os.pathsep.join([PKG_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OMP_NUM_THREADS"] = "1"
    return env | extra


def fresh(code: str, *args, **env) -> subprocess.CompletedProcess:
    "Run `code` in a new interpreter (nothing registered in this process reaches it)."
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=_env(**env),
                          timeout=300)


def make_folder(root: Path, n=8, size=(64, 48)):
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True); (root / "msk").mkdir()
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 80, (size[1], size[0], 3), dtype=np.uint8)); msk = Image.new("L", size, 0)
        for im, fill in ((img, (240, 220, 200)), (msk, 255)): ImageDraw.Draw(im).ellipse([20, 10, 40, 30], fill=fill)
        img.save(root / "img" / f"c{i:02d}.png"); msk.save(root / "msk" / f"c{i:02d}.png")
    return root / "img", root / "msk"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    "A data root holding `mine/` (name = folder) and `other-folder/` (name 'theirs'), written by the `vlsm-prepare` command."
    tmp = tmp_path_factory.mktemp("prepared")
    imgs, msks = make_folder(tmp / "raw")
    for extra in ([], ["--name", "theirs", "--folder", "other-folder"]):
        args = ["--name", "mine"] if not extra else extra
        r = subprocess.run([sys.executable, "-m", "vlsm_adapter.prepare", str(imgs), str(msks), "--out", str(tmp / "data"),
                            *args, "--split", "0.5", "0.25", "0.25"], capture_output=True, text=True, env=_env(), timeout=300)
        assert r.returncode == 0, r.stderr
    return tmp / "data"


FIND = """import sys, json
from vlsm_adapter.data import DATASETS, resolve_dataset, dataset_dir, get_dataset, validate
name, root = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
known_before = name in DATASETS
folder = resolve_dataset(name, root)
ds = get_dataset(name, "train", root=root)
print(json.dumps(dict(known_before=known_before, folder=folder, dir=str(dataset_dir(name, root)), n=len(ds),
                      item=list(ds[0]["pixel_values"].shape), ok=validate(name, root=root, decode=True).ok)))"""


def test_fresh_process_finds_a_prepared_dataset(prepared):
    r = fresh(FIND, "mine", prepared)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == dict(known_before=False, folder="mine", dir=str(prepared / "mine"), n=4, item=[3, 352, 352], ok=True)


def test_fresh_process_default_root_and_other_folder(prepared):
    "No root given: $VLSM_DATA is the data root; a dataset whose folder differs from its name is found by its name."
    r = fresh(FIND, "theirs", VLSM_DATA=str(prepared))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["folder"] == "other-folder"
    r = fresh(FIND, "THEIRS", prepared)                                   # names are case-insensitive, as in the registry
    assert r.returncode == 0 and json.loads(r.stdout)["folder"] == "other-folder", r.stderr


def test_fresh_process_unknown_name_lists_known(prepared):
    r = fresh("import sys\nfrom vlsm_adapter.data import resolve_dataset\nresolve_dataset('nope', sys.argv[1])", prepared)
    assert r.returncode != 0
    assert "unknown dataset 'nope'; known datasets: kvasir (kvasir_polyp)" in r.stderr and PREPARED_FILE in r.stderr
    r = fresh("from vlsm_adapter.data import resolve_dataset\nresolve_dataset('mine')")   # right name, wrong (default) root
    assert r.returncode != 0 and "known datasets" in r.stderr


def _copy(prepared: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(prepared / "mine", dst / "mine")
    return dst / "mine" / PREPARED_FILE


@pytest.mark.parametrize("content,needle", [
    (b'{"name": "mine", "folder": "mine"', "not a valid prepared.json"),               # truncated JSON
    (pickle.dumps({"name": "mine", "folder": "mine"}), "not a valid prepared.json"),    # a pickle is never loaded
    (b'["mine"]', "must hold a JSON object"),
    (b'{"folder": "mine"}', "needs a non-empty string 'name'"),
    (b'{"name": "mine", "folder": "elsewhere"}', "'folder' must name the folder holding it"),
    (b'{"name": "synthetic", "folder": "mine"}', "reserved for SyntheticDataset")])
def test_malformed_prepared_file_is_named(prepared, tmp_path, content, needle):
    f = _copy(prepared, tmp_path); f.write_bytes(content)
    r = fresh("import sys\nfrom vlsm_adapter.data import resolve_dataset\nresolve_dataset('mine', sys.argv[1])", tmp_path)
    assert r.returncode != 0 and needle in r.stderr and str(f.resolve()) in r.stderr, r.stderr
    assert "Traceback" in r.stderr and "UnpicklingError" not in r.stderr


def test_in_process_registration(prepared, tmp_path):
    "In this process too: the name is registered on first use, and `read_prepared` gives prepare's record."
    before, before_names = dict(DATASETS), dict(PAPER_NAMES)
    try:
        assert "mine" not in DATASETS
        assert resolve_dataset("mine", prepared) == "mine" and DATASETS["mine"] == "mine"
        info = read_prepared(prepared / "mine" / PREPARED_FILE)
        assert info["counts"] == {"train": 4, "val": 2, "test": 2} and info["name"] == "mine"
        with pytest.raises(ValueError, match="known datasets"): resolve_dataset("../mine", prepared)   # no path tricks
    finally:
        DATASETS.clear(); DATASETS.update(before); PAPER_NAMES.clear(); PAPER_NAMES.update(before_names)


def test_training_config_takes_a_prepared_dataset_in_a_fresh_process(prepared):
    "What `vlsm-train --dataset mine --data-root ...` does first: the config resolves the name through prepared.json."
    code = ("import sys; from vlsm_adapter.train import TrainConfig; "
            "c = TrainConfig(dataset=sys.argv[1], data_root=sys.argv[2]).resolved(); print(c.dataset, c.batch_size)")
    r = fresh(code, "mine", prepared)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["mine", "32"]
    bad = fresh(code, "nobody", prepared)
    assert bad.returncode != 0 and "unknown dataset" in bad.stderr and "prepared.json" in bad.stderr, bad.stderr
