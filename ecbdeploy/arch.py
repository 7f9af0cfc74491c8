"""The architecture of an ECBSR network: everything needed to rebuild it besides the weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import EcbDeployError

ACTIVATIONS = ("prelu", "relu", "rrelu", "softplus", "linear")
SCALES = (2, 3, 4)
COLORS = (1, 3)
PIXEL_RANGES = (1.0, 255.0)
# The official code builds RReLU with these bounds; in eval mode it is a leaky ReLU with
# slope (lower + upper) / 2.
RRELU_BOUNDS = (-0.05, 0.05)
DEPTH_MULTIPLIER = 2.0


@dataclass(frozen=True)
class ArchSpec:
    blocks: int  # ECBs between head and tail ("module_nums" / "num_block")
    channels: int
    colors: int
    scale: int
    act: str
    with_idt: bool = False
    pixel_range: float = 255.0

    def __post_init__(self):
        if self.act not in ACTIVATIONS:
            raise EcbDeployError(f"unsupported activation {self.act!r}; expected one of {', '.join(ACTIVATIONS)}")
        if self.scale not in SCALES:
            raise EcbDeployError(f"unsupported scale {self.scale}; expected one of {SCALES}")
        if self.colors not in COLORS:
            raise EcbDeployError(f"unsupported colour count {self.colors}; expected 1 or 3")
        if float(self.pixel_range) not in PIXEL_RANGES:
            raise EcbDeployError(f"unsupported pixel range {self.pixel_range}; expected 1 or 255")
        if self.blocks < 0 or self.channels < 1:
            raise EcbDeployError(f"invalid architecture: {self.blocks} blocks of {self.channels} channels")

    @property
    def name(self) -> str:
        suffix = "" if self.colors == 1 else "_rgb"
        return f"ecbsr_m{self.blocks}c{self.channels}_x{self.scale}{suffix}"

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(in, out) channels of every 3x3 conv, head to tail."""
        c, s2 = self.channels, self.scale * self.scale
        return [(self.colors, c)] + [(c, c)] * self.blocks + [(c, self.colors * s2)]

    def macs_per_lr_pixel(self) -> int:
        """Multiply-accumulates of the fused network per input (LR) pixel."""
        return sum(9 * i * o for i, o in self.layer_shapes())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        try:
            return cls(
                blocks=int(d["blocks"]), channels=int(d["channels"]), colors=int(d["colors"]),
                scale=int(d["scale"]), act=str(d["act"]), with_idt=bool(d.get("with_idt", False)),
                pixel_range=float(d.get("pixel_range", 255.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise EcbDeployError(f"invalid architecture metadata: {e}") from None
