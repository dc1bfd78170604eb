"""Multi-device and multi-worker training, for real."""

import json
import os
import socket
import subprocess

import tensorflow as tf
from helpers import HANG_SECONDS
from test_cli import RUN, TINY, _env

from pmkd_tf import pipeline
from pmkd_tf.recipe import Recipe


def test_mirrored_smoke_run_on_two_logical_cpus(cifar, tmp_path):
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    # ReductionToOneDevice: several strategies in one test process would
    # otherwise clash over collective-op instance keys.
    strategy = tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    assert strategy.num_replicas_in_sync == 2
    exp = pipeline.Experiment(dataset="cifar10", net="wrn_10_10", recipe=Recipe(epochs=1, batch_size=64),
                              width_multiplier=1 / 16, train_examples=320, test_examples=160)
    result = pipeline.Trainer(exp, cifar, tmp_path, strategy=strategy, verbose=0).train_method("kd", 0)
    assert result["status"] == "ok" and result["total_epochs"] == 2


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multiworker_two_processes_on_loopback(data_dir, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    args = [*RUN, *TINY, "--epochs=1", "--methods=baseline,kd", "--strategy=multiworker", f"--out_dir={tmp_path}"]
    procs = []
    for index in range(2):
        env = {**_env(data_dir), "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                                    "index": index}})}
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=HANG_SECONDS) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    chief = json.loads((tmp_path / "cifar10" / "vgg13" / "results.json").read_text())["runs"]
    other = json.loads((tmp_path / ".worker-1" / "cifar10" / "vgg13" / "results.json").read_text())["runs"]
    assert chief["kd/seed0"]["status"] == "ok" and chief["baseline/seed0"]["status"] == "ok"
    # Both workers trained the same synchronised model.
    assert chief["kd/seed0"]["test_accuracy"] == other["kd/seed0"]["test_accuracy"]
    assert not os.path.exists(tmp_path / ".worker-0")
