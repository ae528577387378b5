import json

import pytest

from tunescope.data import DataSettings, load_examples, nested_subset
from tunescope.data.readers import read_dataset
from tunescope.errors import UserError

from conftest import rows_in_format, write_jsonl


def _write_all_file_types(tmp_path, rows):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    paths = {"jsonl": write_jsonl(tmp_path / "d.jsonl", rows)}
    paths["json"] = tmp_path / "d.json"
    paths["json"].write_text(json.dumps(rows))
    table = pa.Table.from_pylist(rows)
    paths["parquet"] = tmp_path / "d.parquet"
    pq.write_table(table, paths["parquet"])
    paths["csv"] = tmp_path / "d.csv"
    pacsv.write_csv(table, paths["csv"])
    return paths


def test_all_file_types_read_the_same_records(tmp_path):
    rows = rows_in_format("alpaca")
    for kind, path in _write_all_file_types(tmp_path, rows).items():
        loaded = load_examples(DataSettings(data=str(path)))
        assert loaded.format == "alpaca", kind
        assert [ex.messages[-1]["content"] for ex in loaded.examples] == [r["output"] for r in rows], kind
        assert [ex.id for ex in loaded.examples] == [str(i) for i in range(len(rows))]
        assert len(loaded.fingerprint) == 64


def test_saved_hf_dataset_directory(tmp_path):
    import datasets

    rows = rows_in_format("messages")
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "ds")
    loaded = load_examples(DataSettings(data=str(tmp_path / "ds")))
    assert [ex.id for ex in loaded.examples] == [r["id"] for r in rows]


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", completion: "d"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl line 3: invalid JSON"):
        read_dataset(str(path))


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        read_dataset(str(tmp_path / "nope.jsonl"))
    other = tmp_path / "data.xml"
    other.write_text("hello")
    with pytest.raises(UserError, match="unknown data file type '.xml'"):
        read_dataset(str(other))


def test_empty_and_filtered_datasets(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="the dataset is empty"):
        load_examples(DataSettings(data=str(empty)))
    no_answers = write_jsonl(tmp_path / "blank.jsonl", [{"prompt": "q", "completion": ""}] * 3)
    with pytest.raises(UserError, match="no examples left after filtering"):
        load_examples(DataSettings(data=str(no_answers)))
    # Evaluation prompts need no responses.
    assert len(load_examples(DataSettings(data=str(no_answers)), require_response=False).examples) == 3


def test_subsets_are_nested_and_seeded():
    items = list(range(1000))
    small, medium, large = (nested_subset(items, n, seed=7) for n in (10, 100, 500))
    assert small == medium[:10] and medium == large[:100]
    assert set(small) < set(medium) < set(large)
    assert nested_subset(items, 10, seed=8) != small
    assert nested_subset(items, None, seed=7) == items
    with pytest.raises(UserError, match="larger than"):
        nested_subset(items, 1001, seed=7)
