"""The torch adapter: float32 / bfloat16 / requires_grad round trips, writable outputs on the input's
device, no torch needed to import it."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from passk_jax import advantages as A  # noqa: E402
from passk_jax import estimators as E  # noqa: E402
from passk_jax import torch_api as T  # noqa: E402

R = np.random.RandomState(1).rand(4, 8).astype(np.float32)
B = (np.random.RandomState(2).rand(4, 8) < 0.5).astype(np.float32)


def test_float32_round_trip():
    x = torch.from_numpy(R.copy())
    w = T.pkpo_rewards(x, 4)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32 and w.device.type == "cpu"
    np.testing.assert_allclose(w.numpy(), E.pkpo_rewards(R, 4), atol=1e-6)
    a = T.compute_advantages("passk", torch.from_numpy(B), k=2)
    np.testing.assert_allclose(a.numpy(), A.passk_advantages(B, 2), atol=1e-6)
    m = T.maxg_at_k(x, 3, mask=torch.ones(4, 8, dtype=torch.bool))
    assert m.shape == (4,)
    np.testing.assert_allclose(m.numpy(), E.maxg_at_k(R, 3), atol=1e-6)


def test_bfloat16_in_bfloat16_out():
    x = torch.from_numpy(R).to(torch.bfloat16)
    w = T.pkpo_rewards(x, 4)
    assert w.dtype == torch.bfloat16
    ref = E.pkpo_rewards(x.float().numpy(), 4)  # computed in float32 from the bf16 values
    np.testing.assert_allclose(w.float().numpy(), np.asarray(ref), rtol=1e-2, atol=1e-3)
    g = T.grpo_advantages(torch.from_numpy(B).to(torch.bfloat16))
    assert g.dtype == torch.bfloat16


def test_requires_grad_input_detached_output_and_usable_in_a_loss():
    logits = torch.zeros(4, 8, requires_grad=True)
    rewards = torch.from_numpy(B).requires_grad_(True)
    w = T.compute_advantages("pkpo_sloo_minus_one", rewards, k=2)
    assert not w.requires_grad and w.grad_fn is None
    loss = -(w * torch.log_softmax(logits, -1)).sum()
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_output_writable_and_not_sharing_memory():
    x = torch.from_numpy(R.copy())
    w = T.rloo_advantages(x)
    w += 1.0  # in place: no warning about non-writable numpy memory, input untouched
    np.testing.assert_array_equal(x.numpy(), R)
    assert w.data_ptr() != x.data_ptr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on tensors made from read-only numpy memory
        T.grpo_advantages(x).mul_(2)


def test_integer_and_float64_inputs_and_tensor_k():
    w = T.grpo_advantages(torch.from_numpy(B).to(torch.int64))
    assert w.dtype == torch.float32
    w64 = T.pkpo_rewards(torch.from_numpy(R).double(), torch.tensor(3))
    assert w64.dtype == torch.float64
    np.testing.assert_allclose(w64.numpy(), E.pkpo_rewards(R, 3), atol=1e-6)
    with pytest.raises(ValueError, match="integer"):
        T.pkpo_rewards(torch.from_numpy(R), torch.tensor(True))
    p = T.pass_at_k(torch.tensor([0, 2, 8]), 8, 4)
    np.testing.assert_allclose(p.numpy(), E.pass_at_k(np.array([0, 2, 8]), 8, 4), atol=1e-7)


def test_invalid_k_recorded():
    T.reset_k_flags()
    with pytest.warns(T.InvalidKWarning):
        w = T.pkpo_rewards(torch.from_numpy(R), 9)
    assert (w == 0).all()
    with pytest.warns(T.InvalidKWarning):
        assert torch.isnan(T.maxg_at_k(torch.from_numpy(R), 0)).all()
    assert T.k_flags()["invalid_k_calls"] == 2
    T.reset_k_flags()


def test_importable_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from passk_jax import torch_api as T\n"
        "try:\n"
        "    T.grpo_advantages([[1.0, 0.0]])\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "needs torch" in out.stdout
