"""Drive an NNX module as a pair of pure functions over a plain-dict pytree.

The train state stays a plain nested dict (big_vision style): orbax, optax and
the regex sharding rules all see ordinary paths such as
`params/down/0/conv1/kernel`. The NNX graph structure is split off once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx


class FunctionalModel:
  """`init(rng) -> params` and `apply(params, *args) -> out` for an NNX module factory."""

  def __init__(self, factory: Callable[[nnx.Rngs], nnx.Module]):
    self._factory = factory
    abstract = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
    self.graphdef, self._abstract_state = nnx.split(abstract)
    non_params = nnx.split(abstract, nnx.Param, ...)[2]
    if jax.tree_util.tree_leaves(non_params):
      raise ValueError(f'{type(abstract).__name__} holds non-parameter state; models must be '
                       'pure (use GroupNorm, pass RNG keys explicitly).')

  def init(self, rng: jax.Array) -> dict[str, Any]:
    return nnx.split(self._factory(nnx.Rngs(rng)))[1].to_pure_dict()

  def abstract_params(self) -> dict[str, Any]:
    return self._abstract_state.to_pure_dict()

  def apply(self, params: dict[str, Any], *args, method: str | None = None, **kwargs):
    """The module called on `args`, or its method named `method` (e.g. 'encode')."""
    # tree_map builds a fresh State, so the shared template is never mutated.
    state = jax.tree_util.tree_map(lambda x: x, self._abstract_state)
    nnx.replace_by_pure_dict(state, params)
    module = nnx.merge(self.graphdef, state)
    return (getattr(module, method) if method else module)(*args, **kwargs)

  def attribute(self, name: str) -> Any:
    """A static attribute of the module (e.g. a shape), without building parameters."""
    return getattr(nnx.merge(self.graphdef, self._abstract_state), name)
