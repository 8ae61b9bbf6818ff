"""Meta-learning algorithms: each a short module mapping line by line to its notebook's equations.

Every algorithm offers the same two functions, so the one training loop and the one evaluation
protocol serve them all:

    loss(model, batch)      -> (loss, {"accuracy": ...})  a meta-batch of episodes -> the training loss
    predict(model, episode) -> query logits [N*Q, N]       one episode -> adapted predictions

(transfer, maml, reptile, protonet; ``proto_maml.ProtoMAML`` and ``maml_plus_plus.MAMLPlusPlus`` subclass ``MAML``
and use ``maml.loss`` and ``maml.predict``). The language-model learners keep the shape with what their
inputs need: ``icl`` has two task families, so ``regression_loss`` and ``classification_loss`` /
``classification_predict``, and ``black_box`` (images read as a sequence) trains with ``icl.classification_loss``
and predicts with ``black_box.predict``; ``metaicl.predict(model, tokenizer, dataset, episode)`` needs the
tokenizer and the utterances, bound with ``functools.partial`` before evaluation.

``inner_loop`` is the one functional inner loop (``params -> adapted params``: SGD or Adam steps, step
sizes, ``create_graph``) that MAML and its variants and Reptile share; every ``predict`` runs in eval mode
(``evaluate.eval_mode``).
"""
