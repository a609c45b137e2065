"""NOT RUN YET: the dev machine has no torch (only the multi-GB CUDA wheel is on PyPI); no Rust test uses its
output so far. Kept so the parity test can be added where torch exists.

Writes st_ref.safetensors: a tiny ST model built in PyTorch the way Arc builds it, plus inputs, outputs,
energy loss and gradients, for vcell's parity test (src/model/st.rs `matches_pytorch_reference`).

Independent PyTorch ops are used on purpose (nn.GELU, nn.LayerNorm, nn.RMSNorm, F.scaled_dot_product_attention):
the Rust side is hand-written, so agreement checks the port, not a shared bug.
Structure follows state:src/state/tx/models/state_transition.py (build_mlp from utils.py, LatentToGeneDecoder
from base.py, HF LlamaModel with NoRoPE and bidirectional attention). Run: python make_st_ref.py OUT_DIR
"""
import sys
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # f64 so the comparison tolerance reflects the port, not rounding

G, P, H, L, NH, HD, FF, B, S, NB, GD = 16, 5, 16, 2, 2, 8, 24, 2, 4, 3, 6


def build_mlp(i, o, h, n, p=0.1):
    layers = [nn.Linear(i, h if n > 1 else o)]
    if n > 1:
        layers += [nn.GELU(), nn.Dropout(p)]
        for _ in range(n - 2):
            layers += [nn.Linear(h, h), nn.GELU(), nn.Dropout(p)]
        layers += [nn.Linear(h, o)]
    return nn.Sequential(*layers)


class Attn(nn.Module):
    def __init__(s, causal):
        super().__init__()
        s.q_proj, s.k_proj, s.v_proj = (nn.Linear(H, NH * HD, bias=False) for _ in range(3))
        s.o_proj = nn.Linear(NH * HD, H, bias=False)
        s.causal = causal

    def forward(s, x):
        b, n, _ = x.shape
        q, k, v = (m(x).view(b, n, NH, HD).transpose(1, 2) for m in (s.q_proj, s.k_proj, s.v_proj))
        # NoRoPE: cos = 1, sin = 0 -> q*cos + rotate_half(q)*sin = q
        o = F.scaled_dot_product_attention(q, k, v, is_causal=s.causal)
        return s.o_proj(o.transpose(1, 2).reshape(b, n, NH * HD))


class Mlp(nn.Module):
    def __init__(s):
        super().__init__()
        s.gate_proj, s.up_proj = nn.Linear(H, FF, bias=False), nn.Linear(H, FF, bias=False)
        s.down_proj = nn.Linear(FF, H, bias=False)

    def forward(s, x):
        return s.down_proj(F.silu(s.gate_proj(x)) * s.up_proj(x))


class Layer(nn.Module):
    def __init__(s, causal):
        super().__init__()
        s.self_attn, s.mlp = Attn(causal), Mlp()
        s.input_layernorm, s.post_attention_layernorm = nn.RMSNorm(H, eps=1e-6), nn.RMSNorm(H, eps=1e-6)

    def forward(s, x):
        x = x + s.self_attn(s.input_layernorm(x))
        return x + s.mlp(s.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(s, causal):
        super().__init__()
        s.layers = nn.ModuleList(Layer(causal) for _ in range(L))
        s.norm = nn.RMSNorm(H, eps=1e-6)

    def forward(s, x):
        for l in s.layers:
            x = l(x)
        return s.norm(x)


class St(nn.Module):
    def __init__(s, space, causal=False):
        super().__init__()
        s.space = space
        s.pert_encoder = build_mlp(P, H, H, 4)
        s.basal_encoder = build_mlp(G, H, H, 4)
        s.batch_encoder = nn.Embedding(NB, H)
        s.transformer_backbone = Backbone(causal)
        s.project_out = build_mlp(H, G, H, 4)
        if space == "all":
            s.final_down_then_up = nn.Sequential(nn.Linear(G, G // 8), nn.GELU(), nn.Linear(G // 8, G))
        s.gene_decoder = nn.Module()
        dec, d = [], G
        for h in [8, 8, 4]:
            dec += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(0.1)]
            d = h
        s.gene_decoder.decoder = nn.Sequential(*dec, nn.Linear(d, GD), nn.ReLU())
        for p in s.parameters():  # move LayerNorm/RMSNorm weights off 1/0 so they are tested too
            if p.dim() == 1:
                with torch.no_grad():
                    p.add_(0.1 * torch.randn_like(p))

    def forward(s, ctrl, pert, batch):
        p, b = s.pert_encoder(pert), s.basal_encoder(ctrl)
        h = s.transformer_backbone(p + b + s.batch_encoder(batch))
        if s.space == "all":
            out = s.final_down_then_up(s.project_out(h) + ctrl)
        else:
            out = s.project_out(h + b)
        return torch.relu(out)


def energy(x, y):  # geomloss SamplesLoss("energy"), tensorized, per set
    def d(a, c):
        d2 = (a * a).sum(-1)[:, :, None] - 2 * a @ c.transpose(1, 2) + (c * c).sum(-1)[:, None, :]
        return d2.clamp_min(1e-8).sqrt()
    return d(x, y).mean((1, 2)) - 0.5 * d(x, x).mean((1, 2)) - 0.5 * d(y, y).mean((1, 2))


out = {}
ctrl = torch.rand(B, S, G) * 2
pert = F.one_hot(torch.tensor([[1] * S, [3] * S]), P).double()
batch = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]])
tgt, gtgt = torch.rand(B, S, G) * 2, torch.rand(B, S, GD)
out.update({"in.ctrl": ctrl, "in.pert": pert, "in.batch": batch.to(torch.int64), "in.target": tgt,
            "in.gene_target": gtgt})
for space in ["gene", "all"]:
    m = St(space).eval()
    y = m(ctrl, pert, batch)
    main = energy(y, tgt).mean()
    dec = energy(m.gene_decoder.decoder(y), gtgt).mean()
    total = main + dec
    total.backward()
    for k, v in m.state_dict().items():
        out[f"{space}.w.{k}"] = v.contiguous()
    for k, p in m.named_parameters():
        out[f"{space}.g.{k}"] = p.grad.contiguous()
    out[f"{space}.out"] = y.detach()
    out[f"{space}.loss"] = torch.stack([main, dec]).detach()
save_file(out, f"{sys.argv[1]}/st_ref.safetensors")
print("wrote", len(out), "tensors")
