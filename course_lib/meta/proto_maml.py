"""Proto-MAML: MAML whose last linear layer starts every task as ProtoNet's classifier.

Derived in 06_head_to_head. Triantafillou et al., "Meta-Dataset: A Dataset of Datasets for Learning to
Learn from Few Examples", ICLR 2020, arXiv:1903.03096, section 4.1, and their code
(google-research/meta-dataset, ``MAMLLearner`` with ``proto_maml_fc_layer_init=True``).

The network is an embedding ``f_theta`` followed by a linear head, ``logits = W f_theta(x) + b`` with
``W: [N, D]``, ``b: [N]``. MAML meta-learns ``W, b`` like every other weight; Proto-MAML does not:
for each task it computes the prototypes of the support embeddings at the current ``theta``
(:func:`course_lib.meta.protonet.prototypes`) and sets the head to the linear layer that squared-
Euclidean ProtoNet equals (:func:`course_lib.meta.protonet.linear_head`),

    c_k = mean_{i: y_i = k} f_theta(x_i),     W_k = 2 c_k,     b_k = -||c_k||^2,

so that before any inner step ``W_k f(x) + b_k = -||f(x) - c_k||^2 + ||f(x)||^2``: ProtoNet's logits
plus a term that is the same for every class, the same softmax. From there MAML's inner loop
(:meth:`course_lib.meta.maml.MAML` and :func:`course_lib.meta.inner_loop.inner_loop`) adapts every
weight, head included, on the support set, and the query loss after adaptation is the meta-loss:

    phi_0 = (theta, W(theta), b(theta)),    phi_t = phi_{t-1} - alpha * grad L_support(phi_{t-1}),
    L_meta(theta) = mean_tasks L_query(phi_T).

The meta-gradient reaches ``theta`` through the initialisation too (``W(theta)`` and ``b(theta)`` are
functions of the embedding): with ``first_order=True`` (fo-Proto-MAML, the variant Triantafillou et
al. train) the inner gradients are constants, ``d phi_T / d phi_0 = I``, but the path through the
prototypes stays, exactly as in their code. The network's own head parameters are never used: each task
replaces them, so they are frozen (``requires_grad=False``) and not meta-learned.

Shapes: a task's ``support_x: [N*K, ...]``, ``support_y: [N*K]`` in ``0 .. N-1``, embeddings ``[N*K, D]``,
prototypes ``[N, D]``; ``N`` is the head's ``out_features``. Everything else (meta-batches, ``vmap``,
first/second order, ANIL, Meta-SGD, transductive or one query at a time) is MAML's.

Example::

    proto_maml = ProtoMAML(ConvNet(n_classes=5), inner_lr=0.4, inner_steps=1, eval_inner_steps=3,
                           first_order=True)
    history = train(proto_maml, maml.loss, lambda g: sampler.sample_batch(4, g), TrainConfig(steps=100))
    result = evaluate_episodes(proto_maml.predict, test_episodes)
"""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .inner_loop import Gradient, Params, autograd_gradient
from .maml import MAML
from .protonet import linear_head, prototypes


class ProtoMAML(MAML):
    """MAML with the head initialised from the support set's prototypes in every task (see the module docstring).

    Args:
        net: an embedding followed by its last layer, an ``nn.Linear`` named by ``head_prefix``
            (``ConvNet(n_classes=N)``: ``net.head``); its ``out_features`` is the number of ways ``N``.
        **maml_kwargs: as :class:`course_lib.meta.maml.MAML` (``inner_lr``, ``inner_steps``,
            ``first_order``, ``eval_inner_steps``, ``transductive``, ...).
    """

    def __init__(self, net: nn.Module, head_prefix: str = "head.", **maml_kwargs):
        head_name = head_prefix.rstrip(".")
        head = dict(net.named_modules()).get(head_name)
        if not isinstance(head, nn.Linear):
            found = "no such module" if head is None else type(head).__name__
            raise ValueError(f"Proto-MAML initialises the network's last layer, an nn.Linear named {head_name!r}, "
                             f"from prototypes; this network's {head_name!r} is {found} "
                             "(build the conv net with a head: ConvNet(n_classes=n_way))")
        if head.bias is None:
            raise ValueError(f"Proto-MAML needs a bias in {head_name!r} for b_k = -||c_k||^2 (nn.Linear(..., bias=True))")
        super().__init__(net, head_prefix=head_prefix, **maml_kwargs)
        self.head, self.head_name, self.n_way = head, head_name, head.out_features
        head.requires_grad_(False)   # replaced in every task: never used, so never meta-learned

    def embed(self, params: Params, x: Tensor) -> Tensor:
        """``f_theta(x)``: the input of the head ``[n, D]`` when the network runs at ``params`` on ``x: [n, ...]``.

        Read by a forward hook on the head during ``functional_call(net, params, (x,))``; the network's
        output must be the head's output, else the head is not its last layer and the error says so.
        """
        seen = {}

        def keep(module, inputs, output):
            seen["input"], seen["output"] = inputs[0], output

        handle = self.head.register_forward_hook(keep)
        try:
            output = functional_call(self.net, params, (x,))
        finally:
            handle.remove()
        if seen.get("output") is not output:
            raise ValueError(f"the network's output is not the output of {self.head_name!r}: "
                             "Proto-MAML needs the linear head to be the network's last layer")
        return seen["input"]

    def initial_weights(self, support_x: Tensor, support_y: Tensor) -> Params:
        """``phi_0``: the network's weights ``theta`` with the head set from the prototypes of the support set:
        ``W = 2 c`` ``[N, D]``, ``b = -||c||^2`` ``[N]``, functions of ``theta`` (the meta-gradient flows through them)."""
        params = dict(self.net.named_parameters())
        embeddings = self.embed(params, support_x).to(self.head.weight.dtype)      # [N*K, D], fp32 under AMP
        weight, bias = linear_head(prototypes(embeddings, support_y, self.n_way))  # [N, D], [N]
        # Each weight enters the inner loop as a new node of the graph (a view): second order differentiates the
        # support loss with respect to it, which must be the partial derivative, not also the path through W(theta).
        start = {name: p.view_as(p) for name, p in params.items()}
        return {**start, f"{self.head_name}.weight": weight, f"{self.head_name}.bias": bias}

    def adapt(self, support_x: Tensor, support_y: Tensor, training: bool = True,
              gradient: Gradient = autograd_gradient) -> Params:
        """``phi_T`` for one task: MAML's inner loop (its steps, step sizes and order) from :meth:`initial_weights`.

        At test time (``training=False``) the initialisation carries no graph: nothing differentiates it.
        """
        with torch.set_grad_enabled(training and torch.is_grad_enabled()):
            start = self.initial_weights(support_x, support_y)
        return self.adapt_to(partial(self.support_loss, support_x=support_x, support_y=support_y), training,
                             gradient, start=start)
