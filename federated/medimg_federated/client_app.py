"""The site's ClientApp: train and evaluate the global model on this site's own PACS.

Each SuperNode is started with its site's node config (``site``, ``dicomweb-url`` +
``credentials-file``, or ``folder``); images never leave the site, only weights and metrics.
With ``worker-socket`` in the node config the message is forwarded to the site's warm worker
(:mod:`.site_worker`) and this process never imports torch; otherwise :mod:`.task` does the work here.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

from .site_worker import forward


def clip_when_asked(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``fixedclipping_mod`` for train messages that carry a clipping norm (run config ``dp=client``)."""
    config = message.content.config_records.get("config")
    if message.metadata.message_type.startswith("train") and config is not None and "clipping_norm" in config:
        return fixedclipping_mod(message, context, call_next)
    return call_next(message, context)


app = ClientApp(mods=[clip_when_asked])


@app.train()
def train(message: Message, context: Context) -> Message:
    """Local epochs from the received global weights; replies weights, ``num-examples``, loss (and,
    when the config sets ``evaluate-first``, the received model's hold-out Dice as ``evaluation``)."""
    return _answer(message, context, train=True)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Dice per organ of the received global weights on the site's hold-out."""
    return _answer(message, context, train=False)


def _answer(message: Message, context: Context, *, train: bool) -> Message:
    if "worker-socket" in context.node_config:
        return forward(message, context, train=train)
    from .task import handle_message  # torch, MONAI and the site's data, in this process

    return handle_message(message, context, train=train)
