"""Every bad input to the simulators is refused up front with a ValueError naming the rule and the value.

One table of (function, keyword overrides, expected-message regex); each case starts from a valid call
and changes one thing.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdnotes import models, sde, sgd

X = np.asarray(jax.random.normal(jax.random.key(0), (20, 2)), np.float32)
Y = np.asarray(X @ np.ones((2, 1)), np.float32)
TH = np.zeros(2, np.float32)
KEY = jax.random.key(0)
HUGE = 10**12


def ou(theta):
    return -theta


def cov_ok(theta):
    return jnp.eye(2)


def cov_bad_shape(theta):
    return jnp.eye(3)


def drift_bad_shape(theta):
    return jnp.zeros(3)


def loss_vector(theta, x, y):
    return theta


def sched_negative(k):
    return 0.1 - 0.01 * k  # negative from k = 11


def sched_nan(k):
    return jnp.where(k == 7, jnp.nan, 0.1)


def sched_vector(k):
    return jnp.ones(2) * 0.1


def sched_zero_start(k):
    return 0.0 * k


SGD = dict(key=KEY, loss_fn=models.linreg_loss, theta0=TH, X=X, Y=Y, eta=0.1, batch_size=4, n_steps=10)
SDE = dict(key=KEY, drift=ou, theta0=TH, dt=0.1, n_steps=10)
SGDSDE = dict(key=KEY, loss_fn=models.linreg_loss, theta0=TH, X=X, Y=Y, eta=0.1, batch_size=4, n_steps=10)
BI = dict(key=KEY, step=0, n=20, batch_size=4)


def run_sgd(**kw):
    return sgd.run_sgd(**dict(SGD, **kw))


def run_sde(**kw):
    return sde.run_sde(**dict(SDE, **kw))


def run_sgd_sde(**kw):
    return sde.run_sgd_sde(**dict(SGDSDE, **kw))


def batch_indices(**kw):
    return sgd.batch_indices(**dict(BI, **kw))


def trajectory_keys(**kw):
    return sgd.trajectory_keys(**dict(dict(key=KEY, n_trajectories=3), **kw))


def common(fn, extra_loss=True):
    """Cases every simulator shares (keys, counts, recording, stats, chunking)."""
    c = [
        (fn, dict(key=0), r"key must be a JAX PRNG key from jax.random.key\(seed\); got 0"),
        (fn, dict(key=np.zeros(3, np.uint32)), r"key must be a JAX PRNG key"),
        (fn, dict(key=jax.random.split(KEY, 2)), r"key must be a single PRNG key"),
        (fn, dict(key="seed"), r"key must be a JAX PRNG key from jax.random.key\(seed\); got 'seed'"),
        (fn, dict(n_steps=-1), r"n_steps must be >= 0; got -1"),
        (fn, dict(n_steps=2.5), r"n_steps must be an integer; got 2.5"),
        (fn, dict(n_steps=10.0), r"n_steps must be an integer; got 10.0"),
        (fn, dict(n_steps=2**32 + 3), r"n_steps.* must be <= 2\*\*31 - 1 = 2147483647.*; got 4294967299"),
        (fn, dict(n_steps=True), r"n_steps must be an integer; got True"),
        (fn, dict(n_steps="10"), r"n_steps must be an integer; got '10'"),
        (fn, dict(theta0=np.zeros((2, 2, 2))), r"theta0 must have shape \(d,\) or \(m, d\)"),
        (fn, dict(theta0=np.array(1.0)), r"theta0 must have shape \(d,\) or \(m, d\)"),
        (fn, dict(theta0=np.array([np.nan, 0.0])), r"theta0 must contain only finite values"),
        (fn, dict(theta0=np.array([np.inf, 0.0])), r"theta0 must contain only finite values"),
        (fn, dict(theta0=np.zeros(0)), r"theta0 must have at least one coordinate"),
        (fn, dict(theta0=np.array(["a", "b"])), r"theta0 must be a real numeric array"),
        (fn, dict(theta0=np.zeros((3, 2)), n_trajectories=4), r"must have m = n_trajectories = 4 rows"),
        (fn, dict(n_trajectories=0), r"n_trajectories must be >= 1; got 0"),
        (fn, dict(n_trajectories=-3), r"n_trajectories must be >= 1; got -3"),
        (fn, dict(n_trajectories=2.0), r"n_trajectories must be an integer; got 2.0"),
        (fn, dict(n_trajectories=HUGE), r"the run needs about .* GiB .* but the available host memory has"),
        (fn, dict(n_trajectories=10**10, stats="cov"), r"the run needs about .*stats .* GiB"),
        (fn, dict(n_steps=10**6, n_trajectories=10**6, record_steps=np.arange(0, 10**6, 10)),
         r"the run needs about .*recorded thetas .* GiB"),
        (fn, dict(record_steps=[]), r"record_steps must be a non-empty 1-D sequence of integers; got \[\]"),
        (fn, dict(record_steps=[0, 11]), r"record_steps must be strictly increasing integers in \[0, n_steps=10\]"),
        (fn, dict(record_steps=[-1, 5]), r"record_steps must be strictly increasing integers"),
        (fn, dict(record_steps=[5, 5]), r"record_steps must be strictly increasing integers"),
        (fn, dict(record_steps=[5, 2]), r"record_steps must be strictly increasing integers"),
        (fn, dict(record_steps=[0.5, 2]), r"record_steps must be a non-empty 1-D sequence of integers"),
        (fn, dict(record_steps=[[1, 2]]), r"record_steps must be a non-empty 1-D sequence of integers"),
        (fn, dict(record_steps="all"), r"record_steps must be a non-empty 1-D sequence of integers; got 'all'"),
        (fn, dict(record_steps=[0, [1, 2]]), r"record_steps must be a non-empty 1-D sequence of integers"),
        (fn, dict(stats="var"), r"stats must be None, 'mean' or 'cov'; got 'var'"),
        (fn, dict(stats=1), r"stats must be None, 'mean' or 'cov'; got 1"),
        (fn, dict(stats="mean", burn_in=10), r"burn_in must be <= 9; got 10"),
        (fn, dict(stats="mean", burn_in=-1), r"burn_in must be >= 0; got -1"),
        (fn, dict(stats="mean", burn_in=1.5), r"burn_in must be an integer; got 1.5"),
        (fn, dict(on_divergence="stop"), r"on_divergence must be one of \['ignore', 'raise', 'warn'\]; got 'stop'"),
        (fn, dict(record_params="yes"), r"record_params must be True or False; got 'yes'"),
        (fn, dict(chunk_steps=0), r"chunk_steps must be >= 1; got 0"),
        (fn, dict(chunk_steps=1.5), r"chunk_steps must be an integer; got 1.5"),
        (fn, dict(progress="bar"), r"progress must be True, False or a callable .*; got 'bar'"),
        (fn, dict(mesh="gpu"), r"mesh must be None \(all devices\), False \(one device\) or a jax.sharding.Mesh"),
        (fn, dict(mesh=0), r"mesh must be None \(all devices\), False"),
        (fn, dict(max_growth=1.0), r"max_growth must be None or a number > 1; got 1.0"),
        (fn, dict(max_growth=-5.0), r"max_growth must be a finite number > 0; got -5.0"),
        (fn, dict(max_growth="big"), r"max_growth must be a real number > 0; got 'big'"),
    ]
    return c


def data_cases(fn):
    """Cases of the two simulators that take data X, Y and a per-sample loss."""
    return [
        (fn, dict(X=X[:, 0]), r"X must have 2 dimension\(s\)"),
        (fn, dict(Y=Y[:, 0]), r"Y must have 2 dimension\(s\)"),
        (fn, dict(X=X[:0], Y=Y[:0]), r"X and Y must have at least one row"),
        (fn, dict(Y=Y[:5]), r"X and Y must have the same number of rows"),
        (fn, dict(X=np.where(np.arange(20)[:, None] == 3, np.nan, X)), r"X must contain only finite values"),
        (fn, dict(Y=np.full((20, 1), np.inf)), r"Y must contain only finite values"),
        (fn, dict(X=X + 1e4j), r"X must be a real numeric array"),
        (fn, dict(X="data"), r"X must be a real numeric array"),
        (fn, dict(loss_fn="mse"), r"loss_fn must be a callable loss_fn\(theta, x, y\) -> scalar; got 'mse'"),
        (fn, dict(loss_fn=loss_vector), r"loss_fn\(theta, x, y\) must return a scalar"),
        (fn, dict(theta0=np.zeros(3)), r"(linreg_loss needs theta of size|loss_fn\(theta, x, y\) must accept)"),
        (fn, dict(eta=0.0), r"eta \(learning rate\) must be a finite number > 0; got 0.0"),
        (fn, dict(eta=-0.1), r"eta \(learning rate\) must be a finite number > 0; got -0.1"),
        (fn, dict(eta=np.nan), r"eta \(learning rate\) must be a finite number > 0; got nan"),
        (fn, dict(eta=np.inf), r"eta \(learning rate\) must be a finite number > 0; got inf"),
        (fn, dict(eta="0.1"), r"eta \(learning rate\) must be a real number > 0; got '0.1'"),
        (fn, dict(batch_size=0), r"batch_size must be >= 1; got 0"),
        (fn, dict(batch_size=4.0), r"batch_size must be an integer; got 4.0"),
        (fn, dict(batch_size=-2), r"batch_size must be >= 1; got -2"),
        (fn, dict(batch_size=21, sampling="epoch"), r"batch_size must be <= .*20.*; got 21"),
        (fn, dict(batch_size=21, sampling="without_replacement"), r"batch_size must be <= .*20.*; got 21"),
        (fn, dict(sampling="bogus"), r"sampling must be one of .*; got 'bogus'"),
        (fn, dict(sampling=None), r"sampling must be one of .*; got None"),
        (fn, dict(record_loss=1), r"record_loss must be True or False; got 1"),
    ]


CASES = (
    common(run_sgd) + data_cases(run_sgd) + [
        (run_sgd, dict(eta=sched_negative, n_steps=20), r"eta schedule must be finite and >= 0 at every step .*eta\(11\)"),
        (run_sgd, dict(eta=sched_nan), r"eta schedule must be finite and >= 0 at every step .*eta\(7\)"),
        (run_sgd, dict(eta=sched_vector), r"eta schedule eta\(k\) must return a scalar"),
        (run_sgd, dict(eta=sched_zero_start), r"eta \(learning rate\) at step 0 must be a finite number > 0"),
        (run_sgd, dict(momentum=1.0), r"momentum must be in \[0.0, 1.0\); got 1.0"),
        (run_sgd, dict(momentum=-0.1), r"momentum must be in \[0.0, 1.0\); got -0.1"),
        (run_sgd, dict(momentum=np.nan), r"momentum must be in \[0.0, 1.0\); got nan"),
        (run_sgd, dict(momentum="heavy"), r"momentum must be a real number in \[0.0, 1.0\); got 'heavy'"),
        (run_sgd, dict(weight_decay=-1.0), r"weight_decay must be a finite number >= 0; got -1.0"),
        (run_sgd, dict(weight_decay=np.inf), r"weight_decay must be a finite number >= 0; got inf"),
        (run_sgd, dict(weight_decay="l2"), r"weight_decay must be a finite number >= 0; got 'l2'"),
        (run_sgd, dict(block_size=0), r"block_size must be >= 1; got 0"),
        (run_sgd, dict(block_size=2.0), r"block_size must be an integer; got 2.0"),
        (run_sgd, dict(batch_grad="fast"), r"batch_grad must be one of \['auto', 'generic'\]; got 'fast'"),
        (run_sgd, dict(lam_max=-1.0), r"lam_max must be a finite number > 0; got -1.0"),
        (run_sgd, dict(lam_max=np.nan), r"lam_max must be a finite number > 0; got nan"),
        (run_sgd, dict(loss_fn=partial(models.dln2_loss, dims=(2, 2, 1)), theta0=np.zeros(5)),
         r"dln2_loss with dims \(2, 2, 1\) needs"),
    ]
    + common(run_sde) + [
        (run_sde, dict(dt=0.0), r"dt \(time step\) must be a finite number > 0; got 0.0"),
        (run_sde, dict(dt=-1e-3), r"dt \(time step\) must be a finite number > 0; got -0.001"),
        (run_sde, dict(dt=np.nan), r"dt \(time step\) must be a finite number > 0; got nan"),
        (run_sde, dict(dt="small"), r"dt \(time step\) must be a real number > 0; got 'small'"),
        (run_sde, dict(drift=None), r"drift must be a callable drift\(theta\) -> \(d,\); got None"),
        (run_sde, dict(drift=drift_bad_shape), r"drift\(theta\) must return shape \(2,\)"),
        (run_sde, dict(diffusion=-0.5), r"a scalar diffusion sigma must be finite and >= 0; got -0.5"),
        (run_sde, dict(diffusion=np.nan), r"a scalar diffusion sigma must be finite and >= 0; got nan"),
        (run_sde, dict(diffusion=np.ones((3, 2))), r"diffusion matrix G must have shape \(2, k\)"),
        (run_sde, dict(diffusion=np.ones(2)), r"diffusion matrix G must have 2 dimension\(s\)"),
        (run_sde, dict(diffusion=np.full((2, 2), np.nan)), r"diffusion matrix G must contain only finite values"),
        (run_sde, dict(diffusion=cov_bad_shape), r"diffusion cov_fn\(theta\) must return a \(2, 2\) covariance"),
        (run_sde, dict(diffusion=cov_ok, diffusion_kind="sqrt"),
         r"diffusion_kind must be one of \['cov', 'factor'\]; got 'sqrt'"),
        (run_sde, dict(diffusion=cov_bad_shape, diffusion_kind="factor"),
         r"diffusion factor G\(theta\) must return a \(2, k\) matrix"),
        (run_sde, dict(args=[1.0]), r"args must be a tuple of arrays passed as drift\(theta, \*args\); got \[1.0\]"),
        (run_sde, dict(noise="levy"), r"noise must be a callable noise\(key, shape, dt\) -> increments; got 'levy'"),
        (run_sde, dict(observe="loss"), r"observe must be None or a callable .*; got 'loss'"),
        (run_sde, dict(lam_max=0.0), r"lam_max must be a finite number > 0; got 0.0"),
        (run_sde, dict(block_size=0), r"block_size must be >= 1; got 0"),
    ]
    + common(run_sgd_sde) + data_cases(run_sgd_sde) + [
        (run_sgd_sde, dict(n_steps=2**30, substeps=4),
         r"n_steps \(times substeps = 4\) must be <= 2\*\*31 - 1 = 2147483647 .*; got 1073741824"),
        (run_sgd_sde, dict(order=3), r"order must be 1 \(first-order SDE\) or 2 \(stochastic modified equation\); got 3"),
        (run_sgd_sde, dict(order=True), r"order must be 1 .*; got True"),
        (run_sgd_sde, dict(driver="levy"), r"driver must be one of \['gaussian', 'minibatch'\]; got 'levy'"),
        (run_sgd_sde, dict(substeps=0), r"substeps must be >= 1; got 0"),
        (run_sgd_sde, dict(substeps=1.5), r"substeps must be an integer; got 1.5"),
        (run_sgd_sde, dict(driver="minibatch", substeps=2), r"the minibatch driver uses SGD's own batches: it needs substeps=1"),
        (run_sgd_sde, dict(noise="stable"), r"noise must be a callable noise\(key, shape, dt\) -> increments; got 'stable'"),
    ]
    + [
        (batch_indices, dict(key=0), r"key must be a JAX PRNG key from jax.random.key\(seed\); got 0"),
        (batch_indices, dict(key=jax.random.split(KEY, 3)), r"key must be a single PRNG key"),
        (batch_indices, dict(sampling="bogus"), r"sampling must be one of .*; got 'bogus'"),
        (batch_indices, dict(batch_size=21, sampling="epoch"), r"batch_size must be <= 20; got 21"),
        (batch_indices, dict(batch_size=21, sampling="without_replacement"), r"batch_size must be <= 20; got 21"),
        (batch_indices, dict(batch_size=0), r"batch_size must be >= 1; got 0"),
        (batch_indices, dict(batch_size=2.0), r"batch_size must be an integer; got 2.0"),
        (batch_indices, dict(n=0), r"n \(number of samples\) must be >= 1; got 0"),
        (batch_indices, dict(n=20.0), r"n \(number of samples\) must be an integer; got 20.0"),
        (batch_indices, dict(step=-1), r"step must be >= 0; got -1"),
        (batch_indices, dict(step=2**31), r"step must be <= 2147483646; got 2147483648"),
        (batch_indices, dict(step=1.5), r"step must be an integer scalar; got 1.5"),
        (batch_indices, dict(step=jnp.arange(3)), r"step must be an integer scalar"),
        (batch_indices, dict(step=jnp.float32(2)), r"step must be an integer scalar"),
        (batch_indices, dict(step="0"), r"step must be an integer scalar; got '0'"),
        (trajectory_keys, dict(key=0), r"key must be a JAX PRNG key from jax.random.key\(seed\); got 0"),
        (trajectory_keys, dict(n_trajectories=0), r"n_trajectories must be >= 1; got 0"),
        (trajectory_keys, dict(n_trajectories=2.5), r"n_trajectories must be an integer; got 2.5"),
    ]
)


def _id(case):
    fn, kw, _ = case
    parts = []
    for k, val in kw.items():
        text = repr(val) if not hasattr(val, "shape") else f"{type(val).__name__}{tuple(val.shape)}"
        parts.append(f"{k}={text[:30]}")
    return f"{fn.__name__}-" + ",".join(parts)


@pytest.mark.parametrize("fn,kwargs,pattern", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_refused(fn, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        fn(**kwargs)
    assert "; got " in str(info.value)  # names the rule, then the value received


def test_case_count():
    assert len(CASES) >= 100
