"""A deliberately simple, independent implementation of the reference beacon procedure.

It keeps keys *before* RoPE and re-rotates the whole cache at its compacted positions at
every window, builds explicit attention masks with loops, runs every row through both the
model's and the beacon projections and selects, and does attention by hand. It shares no
code with longctx beyond reading the adapter's weights and config. Slow; tests only.
"""

from __future__ import annotations

import torch


def _rope(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    # x [..., n, D], pos [n]
    f = pos.double().unsqueeze(-1) * inv_freq.double()
    emb = torch.cat((f, f), -1)
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), -1)
    return (x.double() * emb.cos() + rot.double() * emb.sin()).to(x.dtype)


def _layout(cfg, a: int, n_raw: int, full: bool):
    """(kind, idx) of a window's rows: kind 'r'/'b', 1-based idx."""
    rows = []
    for j in range(1, n_raw + 1):
        rows.append(("r", j))
        if cfg.placement == "interleave" and a and j % a == 0:
            rows.append(("b", j // a))
    if cfg.placement == "append" and a and full:
        rows += [("b", k) for k in range(1, cfg.window // a + 1)]
    return rows


def _position(cfg, a, M, kind, i, row_no):
    if cfg.placement == "interleave":
        return M + row_no
    if kind == "r":
        return M + i - 1
    if cfg.scheme == "full-coverage":
        return M + cfg.window + i - 1
    return M + i * a - 1 + (i if cfg.attend_prev else 1)


def _visible(cfg, a, q, k, q_row, k_row):
    (qk, qi), (kk, ki) = q, k
    if cfg.scheme == "full-coverage":
        return k_row <= q_row
    if qk == "r":
        return kk == "r" and ki <= qi
    if kk == "b":
        return ki == qi or (cfg.attend_prev and ki < qi)
    if cfg.scheme == "step-expansion":
        return ki <= qi * a
    return (qi - 1) * a < ki <= qi * a


class ReferenceBeacon:
    def __init__(self, model, adapter, ratios_per_window: list[int]):
        self.m = model
        self.ad = adapter
        self.cfg = adapter.config
        self.ratios = ratios_per_window
        self.inv_freq = model.model.rotary_emb.inv_freq.float()
        n_layers = len(model.model.layers)
        self.mem_k = [None] * n_layers  # pre-RoPE [KH, M, D]
        self.mem_v = [None] * n_layers

    def _proj(self, layer_i, name, x, is_b):
        attn = self.m.model.layers[layer_i].self_attn
        base = getattr(attn, name + "_proj")
        out = base(x)
        if name in self.ad.layers[layer_i]:
            out = torch.where(is_b.unsqueeze(-1), self.ad.layers[layer_i][name](x), out)
        return out

    @torch.no_grad()
    def run(self, ids: list[int]):
        cfg, w = self.cfg, self.cfg.window
        logits = []
        win = 0
        for start in range(0, len(ids), w):
            chunk = ids[start : start + w]
            full = len(chunk) == w
            a = self.ratios[win]
            rows = _layout(cfg, a, len(chunk), full)
            is_b = torch.tensor([t == "b" for t, _ in rows])
            M = 0 if self.mem_k[0] is None else self.mem_k[0].shape[1]
            pos = torch.tensor([_position(cfg, a, M, t, i, r) for r, (t, i) in enumerate(rows)])
            n = len(rows)
            mask = torch.zeros(n, M + n, dtype=torch.bool)
            mask[:, :M] = True
            for qr in range(n):
                for kr in range(n):
                    mask[qr, M + kr] = kr <= qr and _visible(cfg, a, rows[qr], rows[kr], qr, kr)
            raw_ids = torch.tensor([chunk[i - 1] if t == "r" else 0 for t, i in rows])
            h = self.m.model.embed_tokens(raw_ids)
            h = torch.where(is_b.unsqueeze(-1), self.ad.embed.to(h.dtype).expand(n, -1), h)
            new_k, new_v = [], []
            for li, layer in enumerate(self.m.model.layers):
                attn = layer.self_attn
                hd = attn.head_dim
                x = layer.input_layernorm(h)
                q = self._proj(li, "q", x, is_b).view(n, -1, hd).transpose(0, 1)
                k = self._proj(li, "k", x, is_b).view(n, -1, hd).transpose(0, 1)
                v = self._proj(li, "v", x, is_b).view(n, -1, hd).transpose(0, 1)
                if hasattr(attn, "q_norm"):
                    q, k = attn.q_norm(q), attn.k_norm(k)
                new_k.append(k)
                new_v.append(v)
                keys_pre = k if M == 0 else torch.cat((self.mem_k[li], k), 1)
                vals = v if M == 0 else torch.cat((self.mem_v[li], v), 1)
                key_pos = torch.cat((torch.arange(M), pos))
                qr = _rope(q, pos, self.inv_freq)
                kr = _rope(keys_pre, key_pos, self.inv_freq)
                g = q.shape[0] // kr.shape[0]
                kr, vals = kr.repeat_interleave(g, 0), vals.repeat_interleave(g, 0)
                scores = (qr @ kr.transpose(-1, -2)) * attn.scaling
                scores = scores.masked_fill(~mask, float("-inf"))
                o = (scores.softmax(-1) @ vals).transpose(0, 1).reshape(n, -1)
                h = h + self._proj(li, "o", o, is_b)
                h = h + layer.mlp(layer.post_attention_layernorm(h))
            out = self.m.lm_head(self.m.model.norm(h))
            logits.append(out[~is_b])
            if full:
                keep = []
                if win == 0 and cfg.sink:
                    keep += [r for r, (t, i) in enumerate(rows) if t == "r" and i <= cfg.sink]
                want = "r" if a == 0 else "b"
                keep += [r for r, (t, _) in enumerate(rows) if t == want and r not in keep]
                keep_t = torch.tensor(keep, dtype=torch.long)
                for li in range(len(self.mem_k)):
                    kk, vv = new_k[li][:, keep_t], new_v[li][:, keep_t]
                    self.mem_k[li] = kk if self.mem_k[li] is None else torch.cat((self.mem_k[li], kk), 1)
                    self.mem_v[li] = vv if self.mem_v[li] is None else torch.cat((self.mem_v[li], vv), 1)
            win += 1
        return torch.cat(logits)

    def memory_keys(self, layer: int) -> torch.Tensor:
        """Post-RoPE memory keys at compacted positions 0..M-1, ``[KH, M, D]``."""
        k = self.mem_k[layer]
        return _rope(k, torch.arange(k.shape[1]), self.inv_freq)
