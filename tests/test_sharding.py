"""Trajectories sharded over several devices (XLA host devices in a subprocess) are bit-identical to one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json, warnings
import numpy as np, jax, jax.numpy as jnp
from functools import partial
from jax.sharding import Mesh
from sgdnotes import models, sde, sgd
assert len(jax.devices()) == 4, jax.devices()
X = jax.random.normal(jax.random.key(1), (40, 3))
Y = X @ jnp.ones((3, 2)) + 0.1 * jax.random.normal(jax.random.key(2), (40, 2))
DLN = partial(models.dln2_loss, dims=(3, 2, 2))
th_dln = 0.3 * jax.random.normal(jax.random.key(3), (10,))

def ou(th, a):
    return -a * th

def cov_fn(th, a):
    return a * (jnp.eye(2) + 0.1 * jnp.outer(th, th))

def same(a, b):
    out = {}
    for name in a._fields:
        x, y = getattr(a, name), getattr(b, name)
        out[name] = (x is None and y is None) or bool(np.array_equal(np.asarray(x), np.asarray(y)))
    return out

def ndev(r):
    return len(r.final_theta.sharding.device_set) if hasattr(r.final_theta, "sharding") else 1

cases = {}
two = Mesh(np.array(jax.devices()[:2]), ("t",))
for m in (1, 10, 37, 64):
    kw = dict(eta=0.05, batch_size=8, n_steps=90, n_trajectories=m, sampling="epoch", stats="cov", burn_in=20,
              record_steps=[0, 5, 60, 90], record_loss=True, momentum=0.5)
    a = sgd.run_sgd(jax.random.key(3), models.linreg_loss, jnp.zeros(6), X, Y, **kw, mesh=False)
    b = sgd.run_sgd(jax.random.key(3), models.linreg_loss, jnp.zeros(6), X, Y, **kw)
    c = sgd.run_sgd(jax.random.key(3), models.linreg_loss, jnp.zeros(6), X, Y, **kw, mesh=two, chunk_steps=17)
    cases[f"sgd linreg m={m} auto"] = same(a, b)
    cases[f"sgd linreg m={m} 2-device mesh, chunked"] = same(a, c)
kw = dict(eta=0.02, batch_size=6, n_steps=70, n_trajectories=37, record_steps=[0, 70], stats="mean")
cases["sgd dln m=37"] = same(sgd.run_sgd(jax.random.key(4), DLN, th_dln, X, Y, **kw, mesh=False),
                             sgd.run_sgd(jax.random.key(4), DLN, th_dln, X, Y, **kw))
kw = dict(dt=0.05, n_steps=80, n_trajectories=29, record_steps=[0, 40, 80], stats="cov", burn_in=10, args=(1.5,),
          block_size=4)
cases["sde cov_fn m=29"] = same(sde.run_sde(jax.random.key(5), ou, jnp.ones(2), diffusion=cov_fn, **kw, mesh=False),
                                sde.run_sde(jax.random.key(5), ou, jnp.ones(2), diffusion=cov_fn, **kw))
cases["sde scalar m=29"] = same(sde.run_sde(jax.random.key(5), ou, jnp.ones(2), diffusion=0.3, **kw, mesh=False),
                                sde.run_sde(jax.random.key(5), ou, jnp.ones(2), diffusion=0.3, **kw))
for driver in ("gaussian", "minibatch"):
    kw = dict(eta=0.05, batch_size=8, n_steps=40, n_trajectories=7, driver=driver, record_loss=True, stats="mean",
              record_steps=[0, 20, 40])
    cases[f"sgd_sde {driver} m=7"] = same(
        sde.run_sgd_sde(jax.random.key(6), models.linreg_loss, jnp.zeros(6), X, Y, **kw, mesh=False),
        sde.run_sgd_sde(jax.random.key(6), models.linreg_loss, jnp.zeros(6), X, Y, **kw))
r = sgd.run_sgd(jax.random.key(3), models.linreg_loss, jnp.zeros(6), X, Y, eta=0.05, batch_size=8, n_steps=5,
                n_trajectories=64, record_steps=[5])
print(json.dumps({"cases": cases, "devices_used": ndev(r)}))
"""


def test_sharded_runs_are_bit_identical_to_one_device():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices_used"] == 4  # the default really shards over the 4 devices
    bad = {case: [f for f, ok in fields.items() if not ok] for case, fields in out["cases"].items()
           if not all(fields.values())}
    assert not bad, bad
    assert len(out["cases"]) == 13
