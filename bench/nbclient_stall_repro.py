"""Minimal reproduction (upstream: jupyter_client + pyzmq) of the stall of widget cells under
``jupyter nbconvert --execute`` / papermill / nbclient.

An asyncio kernel client waits for a reply on the shell channel (``get_msg``: a ``zmq.asyncio``
poll, woken by the socket's edge-triggered ``ZMQ_FD``). If it sends on the same channel while the
reply is landing, ``Session.send`` sends through a *blocking shadow* of the asyncio socket
(jupyter_client/session.py, ``zmq.Socket.shadow(stream.underlying)``); that ``zmq_send`` processes
the socket's pending commands, which uses up the FD's wake-up, and the asyncio socket is never
told to look again. The poll then sleeps until its timeout (forever without one) although the
reply is there. nbclient does exactly this send: its ``Output`` widget mimic
(nbclient/output_widget.py, ``sync_state``) answers every output routed to an ipywidgets
``Output`` (``interactive``, ``interact``, ``with out:``) with a ``comm_msg`` on the shell channel,
while ``_async_poll_for_reply`` waits there for the cell's ``execute_reply``.

Known upstream: jupyter/nbclient#312 (ipywidget cells block), jupyter/jupyter_client#1059 (a fix
proposed, not merged). steerlab's notebooks avoid it (``steerlab.widgets.slider_figure`` uses no
``Output`` widget). The loop is kept busy for 1 s here so the reply lands during the send, which
makes the outcome certain (on a loaded machine the iopub handling does the same by chance).

Usage: python bench/nbclient_stall_repro.py   (about 15 s; prints the waits, no results file)
Expected on jupyter_client 8.10 / pyzmq 27.3: ~1 s without the send, the full 5 s with it.
"""

from __future__ import annotations

import asyncio
import time

from jupyter_client.manager import AsyncKernelManager

TIMEOUT = 5.0


async def wait_for_reply(kc, send_meanwhile: bool) -> float:
    """Seconds until the execute_reply of a 0.3 s cell is seen (cell started at 0)."""
    kc.execute("import time; time.sleep(0.3)")
    t0 = time.monotonic()
    reply = asyncio.ensure_future(kc.shell_channel.get_msg(timeout=TIMEOUT))
    await asyncio.sleep(0.05)  # the poll is waiting; the kernel is still in the cell
    time.sleep(1.0)  # the loop is busy (e.g. handling iopub); the reply lands meanwhile
    if send_meanwhile:  # what nbclient's Output widget mimic sends
        kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": "none", "data": {}}))
    msg = await reply
    assert msg["msg_type"] == "execute_reply", msg["msg_type"]
    return time.monotonic() - t0


async def main() -> None:
    km = AsyncKernelManager()
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        for send in (False, True, False, True):
            sec = await wait_for_reply(kc, send)
            print(f"{'shell send while waiting' if send else 'no send':>24}: reply seen after "
                  f"{sec:.2f} s{'  <- stalled to the timeout' if sec > TIMEOUT - 0.5 else ''}")
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


if __name__ == "__main__":
    asyncio.run(main())
