"""Tests of the GLUE loaders, the pair tokenizer and the GLUE metrics on the real files."""

import contextlib
import shutil
import signal
import zipfile

import numpy as np
import pytest

from mtl_layers.datasets import files, glue

# (records, sum of labels) per split, counted from the files with quoting disabled.
EXPECTED = {
    ("CoLA", "train"): (8551, 6023),
    ("CoLA", "dev"): (1043, 721),
    ("MRPC", "train"): (3668, 2474),
    ("MRPC", "dev"): (408, 279),
    ("RTE", "train"): (2490, 1249),
    ("RTE", "dev"): (277, 146),
    ("SST-2", "train"): (67349, 37569),
    ("SST-2", "dev"): (872, 444),
}


@pytest.fixture(scope="module")
def glue_dir(data_file):
    return data_file("glue/README.md").parent


@pytest.mark.parametrize("task, split", sorted(EXPECTED))
def test_classification_counts(glue_dir, task, split):
    records, positives = EXPECTED[(task, split)]
    loaded = glue.load_split(task, split, data_dir=glue_dir)
    assert len(loaded) == records
    assert len(loaded.labels) == records
    assert int(loaded.labels.sum()) == positives


@pytest.mark.parametrize("split, records", [("train", 5749), ("dev", 1500)])
def test_stsb_rows_do_not_merge(glue_dir, split, records):
    loaded = glue.load_split("STS-B", split, data_dir=glue_dir)
    assert len(loaded) == records
    assert len(loaded.second_sentences) == records
    assert loaded.labels.min() >= 0.0
    assert loaded.labels.max() <= 5.0


def test_mrpc_header_has_no_byte_order_mark(glue_dir):
    loaded = glue.load_split("MRPC", "train", data_dir=glue_dir)
    assert loaded.sentences[0].startswith("Amrozi accused his brother")
    assert loaded.second_sentences[0].startswith("Referring to him as only")


def test_cola_first_row_is_data(glue_dir):
    loaded = glue.load_split("CoLA", "train", data_dir=glue_dir)
    assert loaded.sentences[0] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert loaded.second_sentences is None


def test_corrupt_copy_rejected(glue_dir, tmp_path):
    shutil.copytree(glue_dir / "RTE", tmp_path / "RTE")
    (tmp_path / "RTE" / "dev.tsv").chmod(0o644)
    with open(tmp_path / "RTE" / "dev.tsv", "a", encoding="utf-8") as stream:
        stream.write("extra\trow\n")
    with pytest.raises(files.ChecksumError, match="SHA-256 mismatch"):
        glue.load_split("RTE", "dev", data_dir=tmp_path)


def test_missing_mrpc_explains_manual_step(tmp_path, monkeypatch):
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="download_glue_data.py"):
        glue.load_split("MRPC", "dev", data_dir=tmp_path, download=True)


def test_missing_file_suggests_download(tmp_path, monkeypatch):
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="download=True"):
        glue.load_split("CoLA", "dev", data_dir=tmp_path)


def test_unknown_task_rejected():
    with pytest.raises(ValueError, match="task"):
        glue.load_split("QNLI", "dev")


def test_tokenizer_pairs_and_padding(glue_dir):
    rte = glue.load_split("RTE", "dev", data_dir=glue_dir)
    tokenizer = glue.PairTokenizer(max_tokens=500).fit(rte.sentences + rte.second_sentences)
    assert tokenizer.vocab_size == 500
    ids = tokenizer.encode(rte.sentences, rte.second_sentences, sequence_length=32)
    assert ids.shape == (277, 32)
    assert ids.dtype == np.int32
    assert ids.max() == tokenizer.separator_id
    # Every pair keeps exactly one separator, even when both sentences are cut.
    assert np.all(np.sum(ids == tokenizer.separator_id, axis=1) == 1)
    single = tokenizer.encode(["the the"], None, sequence_length=4)
    assert single[0, 2:].tolist() == [0, 0]
    assert single[0, 0] == single[0, 1] > 1


def test_metrics_match_hand_counts():
    labels = [1, 1, 1, 0, 0, 0]
    predictions = [0.9, 0.8, 0.1, 0.7, 0.2, 0.3]
    # TP=2, FN=1, FP=1, TN=2: accuracy 4/6, F1 4/6, MCC (4 - 1) / 9.
    mrpc = glue.compute_metrics("MRPC", labels, predictions)
    assert mrpc["accuracy"] == pytest.approx(4 / 6)
    assert mrpc["f1"] == pytest.approx(4 / 6)
    assert mrpc["score"] == pytest.approx(4 / 6)
    cola = glue.compute_metrics("CoLA", labels, predictions)
    assert cola["matthews"] == pytest.approx(3 / 9)
    constant = glue.compute_metrics("CoLA", labels, np.ones(6))
    assert constant["matthews"] == 0.0


def test_stsb_metrics_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=50).astype(float)  # ties in the labels
    predictions = labels + rng.normal(size=50)
    metrics = glue.compute_metrics("STS-B", labels, predictions)
    assert metrics["pearson"] == pytest.approx(stats.pearsonr(labels, predictions)[0])
    assert metrics["spearman"] == pytest.approx(stats.spearmanr(labels, predictions)[0])


def test_metrics_length_mismatch_rejected():
    with pytest.raises(ValueError, match="same length"):
        glue.compute_metrics("RTE", [1, 0], [1.0])


@pytest.fixture
def archive_server(tmp_path):
    """Serve files from a temporary folder over HTTP on 127.0.0.1; yield (folder, base URL)."""
    import functools
    import http.server
    import threading

    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _write_cola_archive(path, glue_dir, dev_suffix=b""):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.write(glue_dir / "CoLA" / "train.tsv", "CoLA/train.tsv")
        archive.writestr("CoLA/dev.tsv", (glue_dir / "CoLA" / "dev.tsv").read_bytes() + dev_suffix)


def test_download_from_archive(glue_dir, archive_server, tmp_path, monkeypatch):
    folder, base_url = archive_server
    _write_cola_archive(folder / "CoLA.zip", glue_dir)
    monkeypatch.setitem(glue.ARCHIVE_URLS, "CoLA", f"{base_url}/CoLA.zip")
    cache = tmp_path / "cache"
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(cache))
    empty = tmp_path / "empty"
    empty.mkdir()

    loaded = glue.load_split("CoLA", "dev", data_dir=empty, download=True)

    assert len(loaded) == EXPECTED[("CoLA", "dev")][0]
    assert sorted(path.name for path in (cache / "glue" / "CoLA").iterdir()) == ["dev.tsv", "train.tsv"]
    leftovers = [path.name for path in (cache / "glue").iterdir() if path.name != "CoLA"]
    assert leftovers == []


def test_download_rejects_altered_archive(glue_dir, archive_server, tmp_path, monkeypatch):
    folder, base_url = archive_server
    _write_cola_archive(folder / "CoLA.zip", glue_dir, dev_suffix=b"extra\trow\n")
    monkeypatch.setitem(glue.ARCHIVE_URLS, "CoLA", f"{base_url}/CoLA.zip")
    cache = tmp_path / "cache"
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(cache))
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(files.ChecksumError, match="differs from the official file"):
        glue.load_split("CoLA", "dev", data_dir=empty, download=True)

    assert list((cache / "glue").iterdir()) == []


@pytest.fixture
def tokenizer():
    return glue.PairTokenizer(100).fit(["a b c d"])


@contextlib.contextmanager
def _time_limit(seconds):
    """Raise TimeoutError when the block runs longer than `seconds` (an endless loop)."""

    def stop(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("sequence_length", [0, 1, -3, 2.5, True])
def test_pair_sequence_length_too_short(tokenizer, sequence_length):
    with _time_limit(20):
        with pytest.raises(ValueError, match=r"`sequence_length` must be an integer >= 2 for pairs"):
            tokenizer.encode(["a b"], ["c d"], sequence_length)


@pytest.mark.parametrize("sequence_length", [0, -3])
def test_single_sequence_length_too_short(tokenizer, sequence_length):
    with pytest.raises(ValueError, match=r"`sequence_length` must be an integer >= 1 for single"):
        tokenizer.encode(["a b"], None, sequence_length)


def test_pair_shortest_length_keeps_separator(tokenizer):
    ids = tokenizer.encode(["a b"], ["c d"], 2)

    assert ids.shape == (1, 2)
    assert int(np.sum(ids == tokenizer.separator_id)) == 1


def test_second_sentences_length_mismatch(tokenizer):
    with pytest.raises(ValueError, match="2 sentences and 1 second sentences"):
        tokenizer.encode(["a b", "c"], ["c d"], 8)


def test_encode_rejects_one_string(tokenizer):
    with pytest.raises(ValueError, match="`sentences` must be a sequence of strings"):
        tokenizer.encode("a b", None, 8)


@pytest.mark.parametrize(
    "task, labels, predictions, message",
    [
        ("CoLA", [0, 1, 1, 0], [np.nan] * 4, r"`predictions` must be finite for task 'CoLA'. Received: 4 NaN"),
        ("STS-B", [0, 1, 2, 3], [np.nan, 1, 2, 3], r"`predictions` must be finite for task 'STS-B'. Received: 1 NaN"),
        ("STS-B", [0, 1, 2, 3], [0, 1, np.inf, 3], "first at index 2"),
        ("RTE", [0, np.nan], [0.1, 0.9], "`labels` must be finite"),
    ],
)  # fmt: skip
def test_metrics_reject_non_finite(task, labels, predictions, message):
    with pytest.raises(ValueError, match=message):
        glue.compute_metrics(task, labels, predictions)


def test_metrics_reject_empty():
    with pytest.raises(ValueError, match="at least one example"):
        glue.compute_metrics("CoLA", [], [])


def test_load_glue_accepts_one_name(glue_dir):
    loaded = glue.load_glue("RTE", data_dir=glue_dir)

    assert list(loaded) == ["RTE"]
    assert len(loaded["RTE"]["dev"]) == EXPECTED[("RTE", "dev")][0]


@pytest.mark.parametrize("tasks, message", [([], "at least one"), (["RTE", "C"], "task='C'")])
def test_load_glue_invalid_tasks(tasks, message):
    with pytest.raises(ValueError, match=message):
        glue.load_glue(tasks)


def _glue_copy(glue_dir, folder, task="CoLA"):
    """Copy one task's files to `folder/<task>` and return `folder`."""
    shutil.copytree(glue_dir / task, folder / task)
    return folder


def test_explicit_data_dir_ignores_other_copies(glue_dir, tmp_path, monkeypatch):
    # Both the data folder variable and the cache hold CoLA, but data_dir does not.
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(glue_dir.parent))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    _glue_copy(glue_dir, tmp_path / "cache" / "glue")
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(FileNotFoundError, match=r"CoLA/dev.tsv not found \(searched .*empty/CoLA, .*empty/glue/CoLA\)"):
        glue.load_split("CoLA", "dev", data_dir=empty)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_data_dir_must_be_a_folder(glue_dir, tmp_path, monkeypatch, kind):
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(glue_dir.parent))
    data_dir = tmp_path / "glue"
    if kind == "file":
        data_dir.write_text("not a folder")

    with pytest.raises(FileNotFoundError, match="`data_dir` must be an existing folder"):
        glue.load_split("CoLA", "dev", data_dir=data_dir)


def test_folder_named_like_file_is_reported(tmp_path):
    (tmp_path / "CoLA" / "dev.tsv").mkdir(parents=True)

    with pytest.raises(FileNotFoundError, match="exist but are not regular files"):
        glue.load_split("CoLA", "dev", data_dir=tmp_path)


def test_default_folder_without_data_dir(glue_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(glue_dir.parent))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))

    assert len(glue.load_split("RTE", "dev")) == EXPECTED[("RTE", "dev")][0]


def test_download_reuses_cached_copy(glue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    _glue_copy(glue_dir, tmp_path / "cache" / "glue")
    # Nothing listens on port 9 of the loopback address, so a download attempt fails.
    monkeypatch.setitem(glue.ARCHIVE_URLS, "CoLA", "http://127.0.0.1:9/CoLA.zip")
    empty = tmp_path / "empty"
    empty.mkdir()

    loaded = glue.load_split("CoLA", "dev", data_dir=empty, download=True)

    assert len(loaded) == EXPECTED[("CoLA", "dev")][0]


def _serve_cola(folder, base_url, glue_dir, monkeypatch, tmp_path):
    """Serve the CoLA archive, point the loader at it and return the cache folder."""
    _write_cola_archive(folder / "CoLA.zip", glue_dir)
    monkeypatch.setitem(glue.ARCHIVE_URLS, "CoLA", f"{base_url}/CoLA.zip")
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(cache))
    return cache


def test_download_completes_partial_cache(glue_dir, archive_server, tmp_path, monkeypatch):
    cache = _serve_cola(*archive_server, glue_dir, monkeypatch, tmp_path)
    task_folder = cache / "glue" / "CoLA"
    task_folder.mkdir(parents=True)
    shutil.copy(glue_dir / "CoLA" / "dev.tsv", task_folder / "dev.tsv")
    (task_folder / "notes.txt").write_text("kept")

    loaded = glue.load_split("CoLA", "train", download=True)

    assert len(loaded) == EXPECTED[("CoLA", "train")][0]
    assert sorted(path.name for path in task_folder.iterdir()) == ["dev.tsv", "notes.txt", "train.tsv"]
    assert (task_folder / "notes.txt").read_text() == "kept"
    assert [path.name for path in (cache / "glue").iterdir()] == ["CoLA"]


def test_download_keeps_existing_file(glue_dir, archive_server, tmp_path, monkeypatch):
    cache = _serve_cola(*archive_server, glue_dir, monkeypatch, tmp_path)
    task_folder = cache / "glue" / "CoLA"
    task_folder.mkdir(parents=True)
    (task_folder / "dev.tsv").write_text("user copy\n")

    glue.load_split("CoLA", "train", download=True)

    assert (task_folder / "dev.tsv").read_text() == "user copy\n"


def test_download_blocked_by_folder(glue_dir, archive_server, tmp_path, monkeypatch):
    cache = _serve_cola(*archive_server, glue_dir, monkeypatch, tmp_path)
    (cache / "glue" / "CoLA" / "train.tsv").mkdir(parents=True)

    with pytest.raises(FileExistsError, match=r"not regular files.*CoLA/train.tsv.*Delete them"):
        glue.load_split("CoLA", "train", download=True)


def test_download_corrupt_archive_message(archive_server, tmp_path, monkeypatch):
    folder, base_url = archive_server
    (folder / "CoLA.zip").write_bytes(b"<html>Service unavailable</html>")
    monkeypatch.setitem(glue.ARCHIVE_URLS, "CoLA", f"{base_url}/CoLA.zip")
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))

    with pytest.raises(files.DownloadError) as raised:
        glue.load_split("CoLA", "train", download=True)

    message = str(raised.value)
    assert f"{base_url}/CoLA.zip is not a valid zip file" in message
    assert f"into {tmp_path / 'cache' / 'glue' / 'CoLA'}." in message
    assert list((tmp_path / "cache" / "glue").iterdir()) == []


def test_download_archive_missing_member(glue_dir, archive_server, tmp_path, monkeypatch):
    folder, base_url = archive_server
    with zipfile.ZipFile(folder / "CoLA.zip", "w") as archive:
        archive.write(glue_dir / "CoLA" / "train.tsv", "CoLA/train.tsv")
    monkeypatch.setitem(glue.ARCHIVE_URLS, "CoLA", f"{base_url}/CoLA.zip")
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))

    with pytest.raises(files.DownloadError, match=r"CoLA.zip has no member CoLA/dev.tsv.*into .*cache/glue/CoLA"):
        glue.load_split("CoLA", "train", download=True)


def test_download_not_found_names_url(archive_server, tmp_path, monkeypatch):
    _, base_url = archive_server
    monkeypatch.setitem(glue.ARCHIVE_URLS, "CoLA", f"{base_url}/CoLA.zip")
    monkeypatch.delenv(files.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))

    with pytest.raises(files.DownloadError, match=f"Could not download {base_url}/CoLA.zip to .*cache/glue/CoLA: HTTP Error 404"):
        glue.load_split("CoLA", "train", download=True)


def test_data_dir_parent_folder(glue_dir, tmp_path):
    _glue_copy(glue_dir, tmp_path / "data" / "glue", task="RTE")

    assert len(glue.load_split("RTE", "dev", data_dir=tmp_path / "data")) == EXPECTED[("RTE", "dev")][0]


def test_data_dir_variable_must_exist(glue_dir, tmp_path, monkeypatch):
    # The cache contains CoLA, but a mistyped variable must not fall back to it.
    monkeypatch.setenv(files.DATA_DIR_VARIABLE, str(tmp_path / "mistyped"))
    monkeypatch.setenv(files.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    _glue_copy(glue_dir, tmp_path / "cache" / "glue")

    with pytest.raises(FileNotFoundError, match="`MTL_LAYERS_DATA_DIR` must name an existing folder"):
        glue.load_split("CoLA", "dev")
