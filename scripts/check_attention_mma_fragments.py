#!/usr/bin/env python3
"""Host-side check of the tensor-core attention's fragment arithmetic.

Emulates, lane by lane, ldmatrix.m8n8.x4 (with and without .trans) and
mma.sync.m16n8k16 (bf16 in, fp32 accumulate) as the PTX ISA lays out their
fragments ("Matrix Fragments for mma.m16n8k16 with floating point type",
"Warp-level matrix load instruction: ldmatrix"), and runs the address and
packing formulas of cuda/attention_mma.cuh (att_ldsm_a, att_ldsm_b,
att_ldsm_b_trans, att_pack_a, att_mma_abt, att_mma_pv; transcribed here, keep
the two in step) for S = Q K^T and O = S V on 64-row shared tiles with row
stride HS + 8, every warp, HS 32, 64 and 128. The padding columns hold NaN, so
a formula that reads past the HS columns fails. Exits 0 when every product
matches numpy exactly (to float64 rounding), 1 otherwise.

This checks index arithmetic only, on the host: no GPU, no bf16 rounding, no
timing. It needs numpy.
"""
import sys

import numpy as np


def ldsm_x4(X, addr, trans):
    """ldmatrix.x4: lanes 8m..8m+7 give the rows of matrix m; register m of
    lane L gets [L>>2][2(L&3) +0/1], or with .trans [2(L&3) +0/1][L>>2]."""
    mats = np.zeros((4, 8, 8))
    for L in range(32):
        r, c = addr(L)
        mats[L >> 3][L & 7] = X[r, c:c + 8]
    out = [[None] * 4 for _ in range(32)]
    for L in range(32):
        for m in range(4):
            if trans:
                out[L][m] = (mats[m][2 * (L & 3)][L >> 2], mats[m][2 * (L & 3) + 1][L >> 2])
            else:
                out[L][m] = (mats[m][L >> 2][2 * (L & 3)], mats[m][L >> 2][2 * (L & 3) + 1])
    return out


def mma(d, a, b0, b1):
    """d += A B with A 16x16 from a (4 pairs per lane), B 16x8 from b0, b1."""
    A = np.zeros((16, 16))
    B = np.zeros((16, 8))
    C = np.zeros((16, 8))
    for L in range(32):
        g, t = L >> 2, L & 3
        for i in range(8):  # a0..a7
            row = g if (i < 2 or 4 <= i < 6) else g + 8
            col = 2 * t + (i & 1) + (8 if i >= 4 else 0)
            A[row, col] = a[L][i >> 1][i & 1]
        for i in range(4):  # b0..b3
            B[2 * t + (i & 1) + (8 if i >= 2 else 0), g] = (b0 if i < 2 else b1)[L][i & 1]
        for i in range(4):  # c0..c3
            C[g + (8 if i >= 2 else 0), 2 * t + (i & 1)] = d[L][i]
    D = A @ B + C
    for L in range(32):
        g, t = L >> 2, L & 3
        for i in range(4):
            d[L][i] = D[g + (8 if i >= 2 else 0), 2 * t + (i & 1)]


# ---- the formulas of cuda/attention_mma.cuh ----
def ldsm_a(X, r0, c0):
    return ldsm_x4(X, lambda L: (r0 + (L & 15), c0 + (L >> 4) * 8), False)


def ldsm_b(X, r0, c0):
    return ldsm_x4(X, lambda L: (r0 + (L & 7) + (L >> 4) * 8, c0 + ((L >> 3) & 1) * 8), False)


def ldsm_b_trans(X, r0, c0):
    return ldsm_x4(X, lambda L: (r0 + (L & 7) + ((L >> 3) & 1) * 8, c0 + (L >> 4) * 8), True)


def pack_a(lo, hi):
    return [(lo[0], lo[1]), (lo[2], lo[3]), (hi[0], hi[1]), (hi[2], hi[3])]


def reg(frag, m):
    return [frag[L][m] for L in range(32)]


def mma_abt(acc, X, r0, Y, HS, NT):
    for kk in range(HS // 16):
        a = ldsm_a(X, r0, kk * 16)
        for np_ in range(NT // 2):
            b = ldsm_b(Y, np_ * 16, kk * 16)
            mma(acc[2 * np_], a, reg(b, 0), reg(b, 1))
            mma(acc[2 * np_ + 1], a, reg(b, 2), reg(b, 3))


def mma_pv(acc, p, Y, HS, NK):
    for kk in range(NK // 2):
        a = [pack_a(p[2 * kk][L], p[2 * kk + 1][L]) for L in range(32)]
        for dp in range(HS // 16):
            b = ldsm_b_trans(Y, kk * 16, dp * 16)
            mma(acc[2 * dp], a, reg(b, 0), reg(b, 1))
            mma(acc[2 * dp + 1], a, reg(b, 2), reg(b, 3))


def to_matrix(acc, ncols):
    M = np.zeros((16, ncols))
    for n, tile in enumerate(acc):
        for L in range(32):
            g, t = L >> 2, L & 3
            for i in range(4):
                M[g + (8 if i >= 2 else 0), n * 8 + 2 * t + (i & 1)] = tile[L][i]
    return M


def zeros(n):
    return [[[0.0] * 4 for _ in range(32)] for _ in range(n)]


def main():
    rng = np.random.default_rng(1)
    ok = True
    for HS in (32, 64, 128):
        tiles = []
        for _ in range(3):
            X = np.full((64, HS + 8), np.nan)
            X[:, :HS] = rng.standard_normal((64, HS))
            tiles.append(X)
        Q, K, V = tiles
        for warp in range(4):
            s = zeros(8)
            mma_abt(s, Q, warp * 16, K, HS, 8)
            S = to_matrix(s, 64)
            e_s = np.abs(S - Q[warp * 16:warp * 16 + 16, :HS] @ K[:, :HS].T).max()
            o = zeros(HS // 8)
            mma_pv(o, s, V, HS, 8)
            e_o = np.abs(to_matrix(o, HS) - S @ V[:, :HS]).max()
            good = e_s < 1e-9 and e_o < 1e-9
            ok &= bool(good)
            print(f"HS={HS:3d} warp {warp}: S = Q K^T max err {e_s:.1e}, O = S V max err {e_o:.1e}"
                  f"{'' if good else '  MISMATCH'}")
    print("fragment arithmetic matches the PTX layouts" if ok else "FRAGMENT ARITHMETIC WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
