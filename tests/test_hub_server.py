"""The loopback Hub of `tests/hub_server.py`, driven by the real `huggingface_hub` client and `transformers`."""

import time

import httpx2
import pytest
import torch
from hub_server import USER
from huggingface_hub import HfApi, ModelCard, SpaceCard, constants, hf_api, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from transformers import AutoModelForSequenceClassification, AutoTokenizer


README = "---\nlicense: mit\ntags:\n- kd_hf\n---\n# A tiny student\n"


def save_tiny_classifier(folder, make_bert, tokenizer, seed):
    """A tiny BERT classifier over `tokenizer`'s vocabulary, its tokenizer and a card, saved in `folder`."""
    make_bert(vocab_size=len(tokenizer), seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(README)


def logits(model_or_path, tokenizer, **load_kwargs):
    """The classifier's logits for two short reviews."""
    model = AutoModelForSequenceClassification.from_pretrained(model_or_path, **load_kwargs).eval()
    with torch.no_grad():
        return model(**tokenizer(["a good film", "a dull and messy cast"], return_tensors="pt", padding=True)).logits


def test_whoami_checks_the_token(hub_server):
    assert HfApi().whoami()["name"] == USER
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        HfApi(token="hf_wrong").whoami()


def test_create_repo_conflicts_unless_exist_ok(hub_server):
    from huggingface_hub import create_repo  # the module-level client, built at import time

    url = create_repo("tiny")
    assert url == f"{hub_server.url}/{USER}/tiny" and url.repo_id == f"{USER}/tiny"
    with pytest.raises(HfHubHTTPError) as error:
        HfApi().create_repo(f"{USER}/tiny")
    assert error.value.response.status_code == 409
    assert HfApi().create_repo(f"{USER}/tiny", exist_ok=True) == url
    assert hub_server.files(f"{USER}/tiny") == {}


@pytest.mark.slow
def test_model_round_trip_through_transformers(hub_server, tmp_path, make_bert, word_tokenizer):
    api, repo_id = HfApi(), "someone/tiny-bert"
    save_tiny_classifier(tmp_path / "v1", make_bert, word_tokenizer, seed=0)
    api.create_repo(repo_id)
    first = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "v1", commit_message="first")

    stored = hub_server.files(repo_id)
    assert stored == {path.name: path.read_bytes() for path in (tmp_path / "v1").iterdir()}
    assert "model.safetensors" in stored and api.model_info(repo_id).sha == first.oid
    assert ModelCard.load(repo_id).data.license == "mit"
    assert open(hf_hub_download(repo_id, "config.json"), "rb").read() == stored["config.json"]

    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    assert tokenizer("a good film")["input_ids"] == word_tokenizer("a good film")["input_ids"]
    torch.testing.assert_close(logits(repo_id, tokenizer), logits(tmp_path / "v1", word_tokenizer), rtol=0, atol=0)

    # A second push updates the repo in place, and loading it again gets the new weights, not the cached ones.
    save_tiny_classifier(tmp_path / "v2", make_bert, word_tokenizer, seed=1)
    api.create_repo(repo_id, exist_ok=True)
    second = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "v2", commit_message="second")
    assert second.oid != first.oid and len(second.oid) == 40
    assert [commit.summary for commit in hub_server.repo(repo_id).commits] == ["initial commit", "first", "second"]
    torch.testing.assert_close(logits(repo_id, tokenizer), logits(tmp_path / "v2", word_tokenizer), rtol=0, atol=0)
    # Pinned to the first commit, the first weights are still there.
    pinned = logits(repo_id, tokenizer, revision=first.oid)
    torch.testing.assert_close(pinned, logits(tmp_path / "v1", word_tokenizer), rtol=0, atol=0)


def test_unchanged_files_are_not_committed_again(hub_server, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    HfApi().create_repo("someone/same")
    first = HfApi().upload_folder(repo_id="someone/same", folder_path=tmp_path)
    again = HfApi().upload_folder(repo_id="someone/same", folder_path=tmp_path)
    assert again.oid == first.oid and len(hub_server.repo("someone/same").commits) == 2


def test_space_repo(hub_server, tmp_path):
    api, space_id = HfApi(), "someone/tiny-demo"
    url = api.create_repo(space_id, repo_type="space", space_sdk="gradio")
    assert url == f"{hub_server.url}/spaces/{space_id}"
    (tmp_path / "app.py").write_text("import gradio\n")
    (tmp_path / "README.md").write_text("---\ntitle: Tiny\nsdk: gradio\napp_file: app.py\nmodels:\n- someone/x\n---\n")
    api.upload_folder(repo_id=space_id, repo_type="space", folder_path=tmp_path)

    assert set(hub_server.files(space_id, repo_type="space")) == {"app.py", "README.md"}
    assert hub_server.repo(space_id, repo_type="space").sdk == "gradio"
    info = api.space_info(space_id)
    assert info.sdk == "gradio" and info.card_data.models == ["someone/x"]
    assert SpaceCard.load(space_id).data.app_file == "app.py"
    assert open(hf_hub_download(space_id, "app.py", repo_type="space")).read() == "import gradio\n"
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(space_id, "app.py")  # a model repo of that name does not exist


def test_dataset_repo(hub_server, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,1\n")
    url = HfApi().create_repo("someone/reviews", repo_type="dataset")
    assert url == f"{hub_server.url}/datasets/someone/reviews"
    HfApi().upload_folder(repo_id="someone/reviews", repo_type="dataset", folder_path=tmp_path)
    assert hub_server.files("someone/reviews", repo_type="dataset") == {"train.csv": b"text,label\ngood,1\n"}
    assert HfApi().dataset_info("someone/reviews").siblings[0].rfilename == "train.csv"
    assert open(hf_hub_download("someone/reviews", "train.csv", repo_type="dataset")).read().startswith("text")


def test_missing_files_and_repos(hub_server):
    HfApi().create_repo("someone/empty")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("someone/empty", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("someone/nothing", "config.json")
    with pytest.raises(OSError, match="someone/nothing"):
        AutoModelForSequenceClassification.from_pretrained("someone/nothing")
    assert HfApi().repo_exists("someone/empty") and not HfApi().repo_exists("someone/nothing")


def test_tree_paths_info_and_deletes(hub_server, tmp_path):
    api, repo_id = HfApi(), "someone/tree"
    for path in ("top.txt", "a/one.txt", "a/b/two.txt"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(path)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=tmp_path)

    assert [entry.path for entry in api.list_repo_tree(repo_id)] == ["a", "top.txt"]
    assert [entry.path for entry in api.list_repo_tree(repo_id, "a")] == ["a/b", "a/one.txt"]
    recursive = [entry.path for entry in api.list_repo_tree(repo_id, recursive=True)]
    assert recursive == ["a", "a/b", "a/b/two.txt", "a/one.txt", "top.txt"]
    info = {entry.path: entry for entry in api.get_paths_info(repo_id, ["top.txt", "a", "missing.txt"])}
    assert set(info) == {"top.txt", "a"} and info["top.txt"].size == len("top.txt")
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, "missing"))

    api.delete_file("top.txt", repo_id)
    api.delete_folder("a/b", repo_id)
    assert api.list_repo_files(repo_id) == ["a/one.txt"] and hub_server.files(repo_id) == {"a/one.txt": b"a/one.txt"}
    with pytest.raises(EntryNotFoundError):
        api.delete_file("top.txt", repo_id)


def test_private_repos_need_the_token(hub_server):
    HfApi().create_repo("someone/secret", private=True)
    assert HfApi().model_info("someone/secret").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("someone/secret")


def test_invalid_card_metadata_is_refused(hub_server, tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: [mit\n---\n")
    HfApi().create_repo("someone/bad-card")
    with pytest.raises(ValueError, match="Invalid metadata"):
        HfApi().upload_folder(repo_id="someone/bad-card", folder_path=tmp_path)
    assert hub_server.files("someone/bad-card") == {}


def test_a_down_hub_fails_fast(dead_endpoint, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    start = time.monotonic()
    # A connection error is no OSError: huggingface_hub's HTTP client (httpx2) raises its own.
    with pytest.raises(httpx2.ConnectError) as error:
        HfApi().create_repo("someone/tiny")
    assert not isinstance(error.value, OSError)
    with pytest.raises(httpx2.ConnectError):
        HfApi().upload_folder(repo_id="someone/tiny", folder_path=tmp_path)
    with pytest.raises(OSError, match="couldn't connect"):
        AutoModelForSequenceClassification.from_pretrained("someone/tiny")
    assert time.monotonic() - start < 5


def test_client_settings_are_restored_after_each_test(hub_backend):
    assert hub_backend.url not in (constants.ENDPOINT, hf_api.api.endpoint)
    assert not constants.HUGGINGFACE_CO_URL_TEMPLATE.startswith(hub_backend.url)
