"""Our adapter-l / adapter-h files in AdapterHub's layout, read by the `adapters` library onto
transformers' GPT2LMHeadModel: the same logits as ours (1e-5); and an adapter `adapters` made
itself, read by us, gives its logits.

`adapters` pins an older transformers than the main test environment, so this file runs in an
environment of its own (.ci/run builds it: torch, adapters, safetensors, pytest, and this
package without its dependencies). Elsewhere it skips, unless NLG_REQUIRE_ADAPTERS=1, when a
missing library is a failure (CI sets it, so the check cannot silently vanish).
"""

from __future__ import annotations

import os

import pytest
import torch
from helpers import tiny_config, with_method

from nlg import methods
from nlg.model import GPT
from nlg.weights import save_pretrained

if os.environ.get("NLG_REQUIRE_ADAPTERS") == "1":
    import adapters  # a missing library fails here instead of skipping
else:
    adapters = pytest.importorskip("adapters")

DESIGNS = ["adapter-l", "adapter-h"]


def ours(name: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return with_method(GPT(tiny_config()), name, seed=seed + 1).eval()


def hub_model(base_dir):
    """transformers' GPT-2 from our saved base, with AdapterHub's adapter support."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(base_dir)
    adapters.init(model)
    return model.eval()


@pytest.mark.parametrize("name", DESIGNS)
def test_adapters_loads_ours_and_computes_our_logits(name: str, tmp_path) -> None:
    model = ours(name)
    settings = methods.settings_of(name, {"adapter_dim": model.transformer.h[0].mlp_residual.down.out_features})
    base = GPT(tiny_config())
    base.load_state_dict({k: v for k, v in model.state_dict().items() if "_residual." not in k})
    save_pretrained(base, tmp_path / "base")
    methods.get(name).save(model, tmp_path / "adapter", settings, base_model=str(tmp_path / "base"))

    hub = hub_model(tmp_path / "base")
    loaded = hub.load_adapter(str(tmp_path / "adapter"), use_safetensors=True)
    hub.set_active_adapters(loaded)
    x = torch.randint(0, 300, (2, 13))
    with torch.no_grad():
        expected = model(x)
        got = hub(x).logits
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The adapter really acts: without it the logits differ.
    hub.set_active_adapters(None)
    with torch.no_grad():
        assert (hub(x).logits - expected).abs().max() > 1e-3


@pytest.mark.parametrize("name", DESIGNS)
def test_we_load_an_adapter_that_adapters_made(name: str, tmp_path) -> None:
    from adapters import BnConfig

    torch.manual_seed(0)
    base = GPT(tiny_config()).eval()
    save_pretrained(base, tmp_path / "base")
    method = methods.get(name)
    hub_config = method.hub_config(64, 8)["config"]
    hub_config["init_weights"] = "bert"  # every weight nonzero, the up-projections too
    hub = hub_model(tmp_path / "base")
    hub.add_adapter("theirs", config=BnConfig(**hub_config))
    hub.set_active_adapters("theirs")
    # adapters 1.3.0 cannot write adapter-l as safetensors (its layer norm has two names, one
    # tensor, which safetensors refuses): it writes pytorch_adapter.bin, which we read as well.
    hub.save_adapter(str(tmp_path / "theirs"), "theirs", with_head=False, use_safetensors=name != "adapter-l")

    found, settings, _ = methods.detect(tmp_path / "theirs")
    assert (found.name, settings.adapter_dim) == (name, 8)
    method.load(base, tmp_path / "theirs", None)
    x = torch.randint(0, 300, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(base(x), hub(x).logits, atol=1e-5, rtol=1e-5)
