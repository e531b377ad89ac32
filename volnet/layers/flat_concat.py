"""FlatConcat: a Concat whose branches add no names of their own to state-dict keys."""

from __future__ import annotations

from volnet.layers.containers import Concat


class FlatConcat(Concat):
    """Concat that splices every branch into its own key namespace.

    torchvision's Inception v3 names the layers of all branches side by side
    (``Mixed_5b.branch1x1.conv.weight``, ``Mixed_5b.branch5x5_1.conv.weight``,
    ``Mixed_5b.branch5x5_2.conv.weight``), with no per-branch prefix. Give each
    branch as a ``Sequential`` with those names; the branch names passed here
    are only for indexing and printing. Computation is exactly ``Concat``'s.

    Example:
        >>> import volnet as vn
        >>> block = FlatConcat({"b1": vn.Sequential({"branch1x1": vn.Conv2d(3, 2, 1)}),
        ...                     "b2": vn.Sequential({"branch3x3": vn.Conv2d(3, 4, 3, padding=1)})})
        >>> list(block.state_dict())
        ['branch1x1.weight', 'branch1x1.bias', 'branch3x3.weight', 'branch3x3.bias']
    """

    def named_children(self):
        return [("", child) for child in self._children.values()]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, child in self._children.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"
