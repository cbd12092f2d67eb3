"""The cluster gateway's parts that need no Ray: per-artist tokens, the fair queue, ``cluster.yaml``.  (The gateway on a real local Ray cluster: ``test_cluster.py``.)"""

from __future__ import annotations

import json
import stat
import time

import pytest

from core.cluster import config
from core.cluster.fairqueue import FairQueue, QueueFull
from core.cluster.tokens import TokenError, TokenStore
from core.cluster.tokens import main as tokens_main


def test_tokens_are_stored_hashed_and_checked(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {name: store.add(name) for name in ("ann", "ben")}
    boss = store.add("boss", admin=True)
    text = (tmp_path / "tokens.json").read_text()
    for token in [*tokens.values(), boss]:
        assert token.split("_", 2)[2] not in text and token not in text
    assert stat.S_IMODE((tmp_path / "tokens.json").stat().st_mode) == 0o600
    assert store.verify(tokens["ann"]).name == "ann" and not store.verify(tokens["ann"]).admin
    assert store.verify(boss).admin
    other = TokenStore(tmp_path / "tokens.json")            # a second reader (the gateway) agrees
    assert other.verify(tokens["ben"]).name == "ben"
    for wrong in (tokens["ann"][:-1] + ("x" if tokens["ann"][-1] != "x" else "y"), "dd1_nothing_here", "",
                  None, 42, tokens["ann"].replace("dd1", "dd2", 1), "dd1_" + tokens["ann"].split("_")[1] + "_"):
        with pytest.raises(TokenError) as e:
            other.verify(wrong)
        assert e.value.reason == "wrong" and str(e.value) == "wrong or missing token"
    with pytest.raises(TokenError):
        store.add("ann")                                      # one token per name
    with pytest.raises(TokenError):
        store.add("no spaces")


def test_a_token_whose_secret_has_underscores_is_accepted(tmp_path, monkeypatch):
    import core.cluster.tokens as T

    monkeypatch.setattr(T.secrets, "token_urlsafe", lambda n: "a_b_c-" + "x" * 36)
    store = TokenStore(tmp_path / "tokens.json")
    token = store.add("ann")
    assert token.count("_") == 4 and store.verify(token).name == "ann"


def test_revoked_and_expired_tokens(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    token = store.add("ann")
    gateway = TokenStore(tmp_path / "tokens.json")
    artist = gateway.verify(token)
    assert gateway.still_valid(artist) is None
    assert store.revoke("ann") and not store.revoke("ann")
    assert gateway.still_valid(artist).reason == "revoked"    # the gateway sees the changed file
    with pytest.raises(TokenError):
        gateway.verify(token)
    soon = store.add("ben", expires=time.time() + 60)
    ben = gateway.verify(soon)
    assert gateway.still_valid(ben) is None
    assert gateway.still_valid(ben, now=time.time() + 61).reason == "expired"
    with pytest.raises(TokenError) as e:
        gateway.verify(soon, now=time.time() + 61)
    assert e.value.reason == "expired"


def test_tokens_command_line(tmp_path, capsys):
    f = str(tmp_path / "t.json")
    assert tokens_main(["--file", f, "add", "ann", "--days", "30"]) == 0
    out = capsys.readouterr().out
    token = out.split(": ", 1)[1].split()[0]
    assert TokenStore(tmp_path / "t.json").verify(token).name == "ann"
    assert tokens_main(["--file", f, "add", "boss", "--admin"]) == 0
    capsys.readouterr()
    assert tokens_main(["--file", f, "list"]) == 0
    listing = capsys.readouterr().out
    assert "ann" in listing and "boss" in listing and "admin" in listing and token not in listing
    assert tokens_main(["--file", f, "revoke", "ann"]) == 0
    assert tokens_main(["--file", f, "revoke", "ann"]) == 2
    assert "ann has no token" in capsys.readouterr().err
    assert tokens_main(["--file", f, "add", "x", "--days", "-1"]) == 2
    assert "--days" in capsys.readouterr().err
    names = [e["name"] for e in json.loads((tmp_path / "t.json").read_text())["tokens"]]
    assert names == ["boss"]


def test_fair_queue_round_robin_across_artists():
    q = FairQueue(limit=50)
    for i in range(50):
        q.push("ann", f"a{i}")
    assert q.pop() == ("ann", "a0")
    q.push("ben", "b0")
    q.push("cat", "c0")
    order = q.order()
    assert order[:4] == [("ben", "b0"), ("cat", "c0"), ("ann", "a1"), ("ann", "a2")]
    assert q.positions()["c0"] == 2 and len(q) == 51
    assert [q.pop() for _ in range(4)] == order[:4]
    q.push("ben", "b1")                                    # ben comes back: after ann's turn
    assert q.order()[:3] == [("ben", "b1"), ("ann", "a3"), ("ann", "a4")]
    assert q.remove("ann", "a3") and not q.remove("ann", "a3") and not q.remove("dan", "d0")
    assert q.pop() == ("ben", "b1") and q.pop() == ("ann", "a4")


def test_fair_queue_limit_per_artist():
    q = FairQueue(limit=2)
    q.push("ann", 1)
    q.push("ann", 2)
    with pytest.raises(QueueFull) as e:
        q.push("ann", 3)
    assert "limit is 2" in str(e.value)
    q.push("ben", 1)                                       # the limit is per artist
    assert q.pop() == ("ann", 1)
    q.push("ann", 3)                                       # a place came free
    assert q.queued("ann") == 2 and q.order() == [("ben", 1), ("ann", 2), ("ann", 3)]


def test_cluster_yaml(tmp_path):
    f = tmp_path / "cluster.yaml"
    f.write_text("replicas: {min: 1, max: 8, initial: 2}\nnum_gpus: 1\nmodels: [sd2-inpainting, sd2-depth]\n"
                 "max_models_per_replica: 3\nmax_queued_per_artist: 10\n")
    cfg = config.load(f)
    opts = cfg.replica_options()
    assert opts["autoscaling_config"]["max_replicas"] == 8 and opts["autoscaling_config"]["min_replicas"] == 1
    assert opts["ray_actor_options"]["num_gpus"] == 1.0 and opts["max_ongoing_requests"] == 1
    assert cfg.max_in_flight == 8 and cfg.models == ("sd2-inpainting", "sd2-depth")
    fixed = config.from_dict({"replicas": 3})
    assert fixed.replica_options()["num_replicas"] == 3 and "autoscaling_config" not in fixed.replica_options()
    for bad, key in (({"replica": 2}, "replica"), ({"replicas": 0}, "replicas"), ({"num_gpus": "one"}, "num_gpus"),
                     ({"models": ["sd9"]}, "models"), ({"replicas": {"min": 3, "max": 2}}, "replicas.max"),
                     ({"device": "tpu"}, "device"), ([1, 2], "(top level)")):
        with pytest.raises(config.ConfigError) as e:
            config.from_dict(bad)
        assert e.value.key == key, (bad, e.value.key)
    f.write_text("replicas: [unclosed\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(f)
    assert "not valid YAML at line" in str(e.value)


def test_the_documented_example_config_loads():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "docs" / "cluster.example.yaml"
    cfg = config.load(example)
    assert cfg.num_gpus == 1 and cfg.models



def test_tokens_through_python_m_core_serve(tmp_path, capsys):
    from core.cli import main

    f = str(tmp_path / "t.json")
    assert main(["serve", "tokens", "--file", f, "add", "ann"]) == 0
    assert "token for ann: dd1_" in capsys.readouterr().out
    assert main(["serve", "tokens", "--file", f, "list"]) == 0
    assert capsys.readouterr().out.startswith("ann")
