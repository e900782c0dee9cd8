"""Quantization table levels, GRACE tables, the region grid, and the shared table-set artifact.

Every table here is uint16 [3, 64] (component Y/Cb/Cr, natural row-major coefficient order) with steps
in 1..255; a table set stacks L of them, [L, 3, 64], level 0 being the finest.

Loss budgets follow the paper (III-B): B bounds the worst-case loss increase over a frame of M DCT
coefficients, so B / M is the budget of one coefficient. Table sets record M (`num_coeffs`) so a bound
keeps its meaning at any frame size.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

BLOCK = 8
DEFAULT_LEVELS = 16
DEFAULT_REGION_BLOCKS = 3
MIN_STEP, MAX_STEP = 1, 255

# JPEG Annex K tables (natural order), the human-visual-system sensitivities behind the default set.
ANNEX_K_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.float64)
ANNEX_K_CHROMA = np.full(64, 99.0)
ANNEX_K_CHROMA[[0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 24, 25]] = [17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 47, 66]


class TableSetError(ValueError):
    """A table set (or its tables.json) is malformed."""


def blocks_for(height: int, width: int) -> tuple[int, int]:
    """Block grid (Hb, Wb) covering an H x W frame."""
    return -(-height // BLOCK), -(-width // BLOCK)


def region_grid(hb: int, wb: int, region_blocks: int = DEFAULT_REGION_BLOCKS) -> tuple[int, int]:
    """Region grid (Rh, Rw) covering Hb x Wb blocks with regions of R x R blocks."""
    return -(-hb // region_blocks), -(-wb // region_blocks)


def block_levels(levels: np.ndarray, hb: int, wb: int, region_blocks: int = DEFAULT_REGION_BLOCKS) -> np.ndarray:
    """Region level map uint8 [Rh, Rw] -> the level of every block, uint8 [Hb, Wb]."""
    if levels.shape != region_grid(hb, wb, region_blocks):
        raise ValueError(f"level map {levels.shape} does not match the region grid "
                         f"{region_grid(hb, wb, region_blocks)} of {hb}x{wb} blocks")
    grown = np.repeat(np.repeat(levels, region_blocks, axis=0), region_blocks, axis=1)
    return np.ascontiguousarray(grown[:hb, :wb], np.uint8)


def region_sums(per_block: np.ndarray, region_blocks: int = DEFAULT_REGION_BLOCKS) -> np.ndarray:
    """Per-block values [Hb, Wb, ...] -> their sums over each region [Rh, Rw, ...]; regions at the right and
    bottom edges sum the blocks they hold."""
    hb, wb = per_block.shape[:2]
    rh, rw = region_grid(hb, wb, region_blocks)
    padded = np.zeros((rh * region_blocks, rw * region_blocks, *per_block.shape[2:]), np.float64)
    padded[:hb, :wb] = per_block
    return padded.reshape(rh, region_blocks, rw, region_blocks, *per_block.shape[2:]).sum(axis=(1, 3))


def _to_steps(q: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(q), MIN_STEP, MAX_STEP).astype(np.uint16)


def stac_table(gradients: np.ndarray, bound: float, num_coeffs: int) -> np.ndarray:
    """Paper III-B: q_n = 2B / (M |g_n|), every coefficient given the same share B/M of the loss bound.

    gradients [3, 64] mean |dLoss/ds| per component and frequency -> uint16 [3, 64]; a zero gradient
    (loss-insensitive frequency) gets the coarsest step.
    """
    g = np.abs(np.asarray(gradients, np.float64))
    with np.errstate(divide="ignore"):
        q = np.where(g > 0, 2.0 * bound / (num_coeffs * g), MAX_STEP)
    return _to_steps(q)


def water_fill(gradients: np.ndarray, magnitudes: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """GRACE's Algorithm 1 over N frequencies sharing `budget` of worst-case loss.

    Each frequency starts with an equal share. A frequency whose worst possible loss |g_n| |s_n| (the
    loss if it is quantized to zero) is below its share is zeroed, and what it leaves of its share goes
    back to the others; repeat until no share is left unused. Returns (share per frequency, zeroed mask).
    """
    g = np.abs(np.asarray(gradients, np.float64)).ravel()
    s = np.abs(np.asarray(magnitudes, np.float64)).ravel()
    worst = g * s
    zeroed = g == 0  # insensitive: no share needed
    active = ~zeroed
    share = np.zeros_like(g)
    while active.any():
        level = (budget - worst[zeroed & (g > 0)].sum()) / active.sum()
        newly = active & (worst < level)
        if not newly.any():
            share[active] = level
            break
        zeroed |= newly
        active &= ~newly
    share[zeroed] = worst[zeroed]
    return share.reshape(np.shape(gradients)), zeroed.reshape(np.shape(gradients))


def grace_table(gradients: np.ndarray, magnitudes: np.ndarray | None, bound: float, num_coeffs: int) -> np.ndarray:
    """GRACE's table for loss bound B: water-filling over the 192 frequencies of a block triple.

    gradients, magnitudes: [3, 64] mean |dLoss/ds| and mean |s| per component and frequency. Without
    magnitudes no frequency can be proven cheap to zero, and the table equals `stac_table`.
    """
    g = np.abs(np.asarray(gradients, np.float64))
    s = np.full_like(g, np.inf) if magnitudes is None else np.asarray(magnitudes, np.float64)
    share, zeroed = water_fill(g, s, bound / num_coeffs * g.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(zeroed | (g == 0), MAX_STEP, 2.0 * share / g)
    return _to_steps(q)


def geometric_bounds(bound: float, levels: int = DEFAULT_LEVELS, ratio: float = 2 ** 0.25,
                     start: int | None = None) -> np.ndarray:
    """L bounds B_l = B * ratio ** (l - start): level ``start`` (default L // 2) is B itself, level 0 the finest."""
    return bound * ratio ** (np.arange(levels) - (levels // 2 if start is None else start))


def level_tables(gradients: np.ndarray, bounds: np.ndarray, num_coeffs: int) -> np.ndarray:
    """One STAC table per bound: uint16 [L, 3, 64], non-decreasing in l when bounds increase."""
    return np.stack([stac_table(gradients, b, num_coeffs) for b in bounds])


def table_set_id(tables: np.ndarray) -> bytes:
    """First 8 bytes of the SHA-256 of the tables as little-endian uint16 [L, 3, 64] (docs/bitstream.md)."""
    return hashlib.sha256(np.ascontiguousarray(tables, "<u2").tobytes()).digest()[:8]


@dataclasses.dataclass(frozen=True, eq=False)
class TableSet:
    """The artifact device and edge share (tables.json): L table levels and how they were made."""

    tables: np.ndarray  # uint16 [L, 3, 64]
    bounds: np.ndarray  # float64 [L], B_l of each level
    gradients: np.ndarray  # float64 [3, 64], mean |g_n|
    bound: float  # the chosen B
    num_coeffs: int  # M the bounds refer to
    model: dict  # {"name": ..., "sha256": ...} of the model the tables were made for
    magnitudes: np.ndarray | None = None  # float64 [3, 64], mean |s_n| (GRACE's zeroing test)
    block: int = BLOCK
    region_blocks: int = DEFAULT_REGION_BLOCKS
    subsampling: str = "444"

    def __post_init__(self) -> None:
        tables = np.asarray(self.tables)
        if tables.ndim != 3 or tables.shape[1:] != (3, 64) or not 1 <= tables.shape[0] <= 255:
            raise TableSetError(f"tables must be [L, 3, 64] with 1 <= L <= 255, got {tables.shape}")
        if tables.min() < MIN_STEP or tables.max() > MAX_STEP or not np.all(np.equal(np.mod(tables, 1), 0)):
            raise TableSetError(f"table steps must be integers in {MIN_STEP}..{MAX_STEP}")
        object.__setattr__(self, "tables", tables.astype(np.uint16))
        object.__setattr__(self, "bounds", np.asarray(self.bounds, np.float64))
        object.__setattr__(self, "gradients", np.asarray(self.gradients, np.float64))
        if self.bounds.shape != (self.levels,):
            raise TableSetError(f"bounds must have one entry per level ({self.levels}), got {self.bounds.shape}")
        if self.gradients.shape != (3, 64):
            raise TableSetError(f"gradients must be [3, 64], got {self.gradients.shape}")
        if self.magnitudes is not None:
            object.__setattr__(self, "magnitudes", np.asarray(self.magnitudes, np.float64))
            if self.magnitudes.shape != (3, 64):
                raise TableSetError(f"magnitudes must be [3, 64], got {self.magnitudes.shape}")
        if self.block != BLOCK:
            raise TableSetError(f"block size must be {BLOCK}, got {self.block}")
        if not 1 <= self.region_blocks <= 255:
            raise TableSetError(f"region_blocks must be 1..255, got {self.region_blocks}")
        if self.subsampling != "444":
            raise TableSetError(f"subsampling must be '444' (4:2:0 is not supported yet), got {self.subsampling!r}")
        if not (self.bound > 0 and self.num_coeffs > 0):
            raise TableSetError("bound and num_coeffs must be positive")

    @property
    def levels(self) -> int:
        return self.tables.shape[0]

    @property
    def middle_level(self) -> int:
        """The level whose bound is B: it codes the first keyframe (paper Algorithm 2). L // 2 for a set
        centred on B; calibration may place B off-centre to span the accuracy range users want."""
        return self.level_for(self.bound)

    def level_for(self, bound: float) -> int:
        """The level whose bound is nearest ``bound`` on a log scale (the coarser one on a tie): the level a
        keyframe coded at one level everywhere uses for a requested bound (``--bound``, ``--kbps``)."""
        if not bound > 0:
            raise ValueError(f"a loss bound must be positive, got {bound}")
        distance = np.abs(np.log(self.bounds / bound))
        return int(self.levels - 1 - np.argmin(distance[::-1]))

    @property
    def id(self) -> bytes:
        return table_set_id(self.tables)

    @property
    def steps(self) -> np.ndarray:
        """float32 [L, 3, 64], as the block transforms take them."""
        return self.tables.astype(np.float32)

    @classmethod
    def from_gradients(cls, gradients: np.ndarray, bound: float, num_coeffs: int, model: dict, *,
                       levels: int = DEFAULT_LEVELS, ratio: float = 2 ** 0.25, start: int | None = None,
                       **kwargs) -> "TableSet":
        bounds = geometric_bounds(bound, levels, ratio, start)
        return cls(level_tables(gradients, bounds, num_coeffs), bounds, gradients, bound, num_coeffs, model, **kwargs)

    @classmethod
    def default(cls) -> "TableSet":
        """The set used until a model is calibrated: not DNN-driven.

        Gradients are the reciprocals of JPEG's Annex K tables (the human eye's sensitivities), so level l
        is the Annex K table scaled by 2 B_l / M: the middle level is JPEG quality 90's scaling (0.2), and
        16 levels a factor 2**0.25 apart span roughly quality 97 (level 0) to quality 66 (level 15).
        """
        gradients = np.stack([1.0 / ANNEX_K_LUMA, 1.0 / ANNEX_K_CHROMA, 1.0 / ANNEX_K_CHROMA])
        num_coeffs = 3 * 1024 * 2048
        return cls.from_gradients(gradients, 0.1 * num_coeffs, num_coeffs,
                                  {"name": "jpeg-annex-k", "sha256": None})

    def regions(self, height: int, width: int) -> tuple[int, int]:
        """The region grid (Rh, Rw) of an H x W frame: one level per region."""
        return region_grid(*blocks_for(height, width), self.region_blocks)

    def size_warning(self, height: int, width: int) -> str | None:
        """A warning when frames of this size are far (> 2x in pixels) from the size the set was calibrated at:
        the bounds are per coefficient, but the model's sensitivity per coefficient changes with the scale."""
        calibrated = self.model.get("calibration", {}).get("size")
        if not calibrated:
            return None
        ratio = height * width / (calibrated[0] * calibrated[1])
        if 0.5 <= ratio <= 2:
            return None
        return (f"frames are {width}x{height} but the tables were calibrated at {calibrated[1]}x{calibrated[0]} "
                f"({ratio:.2g}x the pixels); recalibrate at this size (stac-calibrate --size {width}x{height}) "
                f"for levels that mean what they say")

    def to_json(self) -> str:
        doc = {
            "id": self.id.hex(),
            "tables": self.tables.tolist(),
            "bounds": self.bounds.tolist(),
            "gradients": self.gradients.tolist(),
            "magnitudes": None if self.magnitudes is None else self.magnitudes.tolist(),
            "bound": self.bound,
            "num_coeffs": self.num_coeffs,
            "block": self.block,
            "region_blocks": self.region_blocks,
            "subsampling": self.subsampling,
            "model": self.model,
        }
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "tables.json") -> "TableSet":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise TableSetError(f"{source}: not JSON ({e})") from None
        required = ["tables", "bounds", "gradients", "bound", "num_coeffs", "block", "region_blocks",
                    "subsampling", "model"]
        missing = [k for k in required if k not in doc]
        if missing:
            raise TableSetError(f"{source}: missing keys {', '.join(missing)}")
        try:
            ts = cls(np.asarray(doc["tables"]), doc["bounds"], doc["gradients"], float(doc["bound"]),
                     int(doc["num_coeffs"]), doc["model"], doc.get("magnitudes"), int(doc["block"]),
                     int(doc["region_blocks"]), str(doc["subsampling"]))
        except TableSetError as e:
            raise TableSetError(f"{source}: {e}") from None
        except (TypeError, ValueError) as e:
            raise TableSetError(f"{source}: malformed value ({e})") from None
        if "id" in doc and doc["id"] != ts.id.hex():
            raise TableSetError(f"{source}: id {doc['id']} does not match its tables ({ts.id.hex()})")
        return ts

    @classmethod
    def load(cls, path: str | Path) -> "TableSet":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise TableSetError(f"cannot read table set {path}: {e.strerror}") from None
        return cls.from_json(text, str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())
