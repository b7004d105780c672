"""A compact BERT sentence encoder whose Linear layers run in int8, with outlier channels kept in fp32.

Used for all-MiniLM-L6-v2 (6 layers) and multilingual-e5-small (12 layers); both are BERT blocks of
width 384 with 12 heads, mean pooling and L2 normalisation.

Plain dynamic int8 quantisation of all-MiniLM-L6-v2 costs a lot of accuracy because a handful of
hidden channels carry values far larger than the rest, which wrecks the per-tensor activation scale.
Here each Linear's input is split: those few outlier channels (found once by a calibration pass on
built-in sentences) go through a tiny fp32 matmul, the rest through the int8 kernel, and the two
results are added. That brings the vectors back close to fp32's at nearly int8 speed (cosines in
docs/figures.md).

The forward pass is written out (fused QKV projection, SDPA attention, no pooler) rather than taken from
transformers, so batches can be small enough for the activations to stay in cache.
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-12

# Outlier rule: an input channel whose calibrated max |x| exceeds OUTLIER_RATIO x the median channel's
# max is kept in fp32, at most MAX_OUTLIERS per Linear.
OUTLIER_RATIO = 4.0
MAX_OUTLIERS = 16

# Varied English and Chinese text for the calibration pass (only the channel maxima matter).
CALIBRATION_TEXTS = (
    "The company reported third-quarter revenue of $4.2 billion, up 12% year over year, and raised "
    "its full-year guidance despite higher freight costs and a stronger dollar.",
    "Operator: Good morning, and welcome to the fourth quarter earnings call. All participants are in "
    "listen-only mode. I would now like to turn the call over to the chief financial officer.",
    "Heavy rain caused flooding across the northern districts on Tuesday; schools were closed and "
    "emergency crews evacuated more than 3,000 residents.",
    "We expect gross margin to be between 41 and 43 percent, with operating expenses of roughly "
    "$610 million, excluding stock-based compensation and restructuring charges.",
    "Researchers published a study showing that the new vaccine reduced hospitalisations by 70% in adults "
    "over 65.",
    "Q: How do I reset my password? A: Open Settings, choose Account, then select 'Forgot password'.",
    "2023年7月28日，国家统计局发布数据显示，上半年国内生产总值同比增长5.5%，就业形势总体稳定。",
    "记者从市教育局获悉，今年全市新增中小学学位1.2万个，将于9月1日前全部投入使用。",
    "据气象部门预报，受台风影响，未来三天我省东南部将出现大到暴雨，局部地区有大暴雨。",
    "该公司表示，新产品将在8月份上市，售价为2999元，首批产能约为50万台。",
    "人民网北京7月27日电 中国人民银行今天宣布，将进一步加大对小微企业的金融支持力度。",
    "Mixed text: iPhone 15 发布会定于9月12日举行, Apple CEO Tim Cook 将出席。",
)


class OutlierSplitLinear(nn.Module):
    """``lin(x)`` computed as int8-able ``lin`` on x with outlier channels zeroed, plus fp32 on those.

    ``owns_input``: the input is a temporary nobody reads afterwards (GELU output, attention
    context), so its outlier columns are zeroed in place instead of copying the whole tensor.
    """

    def __init__(self, lin: nn.Linear, outliers: torch.Tensor, owns_input: bool = False) -> None:
        super().__init__()
        self.lin = lin
        self.owns_input = owns_input
        self.register_buffer("outliers", outliers)
        self.register_buffer("w_outliers_t", lin.weight.data[:, outliers].t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = x.index_select(-1, self.outliers)
        if self.owns_input:
            y = self.lin(x.index_fill_(-1, self.outliers, 0.0))
        else:
            y = self.lin(x.index_fill(-1, self.outliers, 0.0))
        # accumulate the fp32 part in place: one pass over y instead of a matmul result plus an add
        y.view(-1, y.shape[-1]).addmm_(kept.view(-1, kept.shape[-1]), self.w_outliers_t)
        return y


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    lin.weight.data = weight.contiguous()
    lin.bias.data = bias.contiguous()
    return lin


def _layer_norm(weight: torch.Tensor, bias: torch.Tensor, eps: float = LN_EPS) -> nn.LayerNorm:
    ln = nn.LayerNorm(weight.shape[0], eps=eps)
    ln.weight.data = weight
    ln.bias.data = bias
    return ln


class _Layer(nn.Module):
    def __init__(self, sd: dict[str, torch.Tensor], p: str, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        qkv = [f"{p}attention.self.{n}" for n in ("query", "key", "value")]
        self.qkv = _linear(
            torch.cat([sd[n + ".weight"] for n in qkv]), torch.cat([sd[n + ".bias"] for n in qkv])
        )
        self.attn_out = _linear(sd[p + "attention.output.dense.weight"], sd[p + "attention.output.dense.bias"])
        self.ln1 = _layer_norm(sd[p + "attention.output.LayerNorm.weight"], sd[p + "attention.output.LayerNorm.bias"], eps)
        self.ffn_in = _linear(sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"])
        self.ffn_out = _linear(sd[p + "output.dense.weight"], sd[p + "output.dense.bias"])
        self.ln2 = _layer_norm(sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = self.ln1(self.attn_out(ctx.transpose(1, 2).reshape(b, n, d)).add_(x))
        return self.ln2(self.ffn_out(F.gelu(self.ffn_in(x))).add_(x))


class BertEncoder(nn.Module):
    """BERT encoder + mean pooling + L2 normalisation (sentence-transformers' recipe).

    ``sd`` uses Hugging Face BERT names without the word embeddings, which come as a module
    (an ``nn.Embedding``, or a table that stays quantised) so large vocabularies need not be fp32.
    """

    def __init__(self, sd: dict[str, torch.Tensor], word: nn.Module, layers: int, heads: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.word = word
        self.register_buffer("position", sd["embeddings.position_embeddings.weight"])
        self.register_buffer("token_type", sd["embeddings.token_type_embeddings.weight"][0])
        self.ln = _layer_norm(sd["embeddings.LayerNorm.weight"], sd["embeddings.LayerNorm.bias"], eps)
        self.layers = nn.ModuleList(_Layer(sd, f"encoder.layer.{i}.", heads, eps) for i in range(layers))

    @property
    def max_positions(self) -> int:
        return int(self.position.shape[0])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        x = self.ln(self.word(ids) + self.position[:n] + self.token_type)
        # Sorted batches often have no padding at all; SDPA is faster without a mask.
        attn = None if bool(mask.all()) else mask[:, None, None, :].bool()
        for layer in self.layers:
            x = layer(x, attn)
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)


def minilm_encoder(model_dir: Path, layers: int = 6, heads: int = 12) -> BertEncoder:
    """all-MiniLM-L6-v2 from its safetensors checkpoint."""
    from safetensors.torch import load_file

    raw = load_file(str(Path(model_dir) / "model.safetensors"))
    sd = {k.removeprefix("bert.").removeprefix("model."): v for k, v in raw.items()}
    word = nn.Embedding.from_pretrained(sd.pop("embeddings.word_embeddings.weight"))
    return BertEncoder(sd, word, layers, heads)


def input_maxima(model: BertEncoder, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| seen by every Linear over the calibration batches."""
    maxima: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):

            def record(_mod, inputs, _out, name=name):
                x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
                maxima[name] = torch.maximum(maxima[name], x) if name in maxima else x

            hooks.append(mod.register_forward_hook(record))
    try:
        with torch.inference_mode():
            for ids, mask in batches:
                model(ids, mask)
    finally:
        for h in hooks:
            h.remove()
    return maxima


def int8_engine() -> str:
    """The quantised engine to pack the Linears for: oneDNN on x86, where its dynamic int8 Linear
    is faster than fbgemm's at this model's shapes (AVX-512 VNNI and AVX2 alike, same vectors;
    docs/figures.md); elsewhere torch's own choice."""
    engines = torch.backends.quantized.supported_engines
    if platform.machine().lower() in ("x86_64", "amd64") and "onednn" in engines:
        return "onednn"
    return torch.backends.quantized.engine


@contextlib.contextmanager
def _packing_engine(engine: str) -> Iterator[None]:
    """Packed weights keep the engine they were packed for, so the process-wide setting is
    needed only while packing and is put back afterwards."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def quantize_with_outliers(
    model: BertEncoder,
    maxima: dict[str, torch.Tensor],
    ratio: float = OUTLIER_RATIO,
    max_outliers: int = MAX_OUTLIERS,
    engine: str | None = None,
) -> tuple[nn.Module, dict[str, int]]:
    """Wrap Linears with outlier inputs, then int8-quantise every Linear (per-channel weights)
    packed for ``engine`` (default :func:`int8_engine`)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    split: dict[str, int] = {}
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, nn.Linear) or name not in maxima:
            continue
        peak = maxima[name]
        top = torch.argsort(peak, descending=True)[:max_outliers]
        outliers = torch.sort(top[peak[top] > ratio * peak.median()]).values
        if outliers.numel():
            parent_name, _, attr = name.rpartition(".")
            owns_input = attr in ("attn_out", "ffn_out")  # inputs are temporaries (see _Layer)
            setattr(model.get_submodule(parent_name), attr, OutlierSplitLinear(mod, outliers, owns_input))
            split[name] = int(outliers.numel())
    with warnings.catch_warnings(), _packing_engine(engine or int8_engine()):
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; the API still works
        quantized = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return quantized, split
