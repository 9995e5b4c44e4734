"""Drive a lifecycle node through its standard services (what ``ros2 lifecycle set`` / ``get`` do).

``<node>/change_state`` (lifecycle_msgs/srv/ChangeState) takes a transition by label: ``configure``,
``activate``, ``deactivate``, ``cleanup``, ``shutdown`` (from unconfigured, inactive or active alike);
``<node>/get_state`` (lifecycle_msgs/srv/GetState) tells the current state's label. Used by the demo, the
benchmarks and the tests.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

#: The transitions :meth:`LifecycleClient.change` takes, by label.
TRANSITIONS = ("configure", "activate", "deactivate", "cleanup", "shutdown")
#: Seconds after which an unanswered get_state is asked again (a reply lost in discovery).
GET_STATE_RESEND_S = 2.0


class LifecycleError(RuntimeError):
    """A lifecycle service did not answer in time, or refused the transition."""


class LifecycleClient:
    """Clients of one lifecycle node's ``change_state`` and ``get_state`` services.

    Args:
        node: the rclpy node that calls.
        target: the lifecycle node's fully qualified name, e.g. ``/spatial_reward_node``.
        spin: called while waiting for an answer (e.g. ``lambda: executor.spin_once(timeout_sec=0.05)``)
            when nothing else spins ``node``; by default the wait only sleeps (an executor spins elsewhere).
    """

    def __init__(self, node: Any, target: str, spin: Callable[[], None] | None = None) -> None:
        self.target = target.rstrip("/")
        self._change = node.create_client(ChangeState, f"{self.target}/change_state")
        self._get = node.create_client(GetState, f"{self.target}/get_state")
        self._spin = spin or (lambda: time.sleep(0.01))

    def wait_for_services(self, timeout_s: float = 30.0) -> bool:
        """Whether both services appeared within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not (self._change.service_is_ready() and self._get.service_is_ready()):
            if time.monotonic() > deadline:
                return False
            self._spin()
        return True

    def _call(self, client: Any, request: Any, timeout_s: float, what: str) -> Any:
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                client.remove_pending_request(future)
                raise LifecycleError(f"{self.target}: no answer to {what} within {timeout_s:g} s")
            self._spin()
        return future.result()

    def state(self, timeout_s: float = 10.0) -> str:
        """The current state's label (``unconfigured``, ``inactive``, ``active``, ``finalized``, ...).

        Asked again every :data:`GET_STATE_RESEND_S` until ``timeout_s``: just after discovery a DDS reply can
        be lost (the server's reply writer not yet matched to this client's reader; ros2/rclcpp#2760), and a
        query is safe to repeat. Transitions are not: :meth:`change` asks once.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            attempt_s = min(GET_STATE_RESEND_S, deadline - time.monotonic())
            try:
                return self._call(self._get, GetState.Request(), attempt_s, "get_state").current_state.label
            except LifecycleError:
                if time.monotonic() + 1e-3 >= deadline:
                    raise LifecycleError(f"{self.target}: no answer to get_state within {timeout_s:g} s") from None

    def change(self, transition: str, timeout_s: float = 60.0) -> bool:
        """Request ``transition`` (a label of :data:`TRANSITIONS`); whether the node made it."""
        if transition not in TRANSITIONS:
            raise ValueError(f"transition {transition!r} is not one of {TRANSITIONS}")
        request = ChangeState.Request(transition=Transition(label=transition))
        return bool(self._call(self._change, request, timeout_s, transition).success)

    def walk(self, *transitions: str, timeout_s: float = 60.0) -> str:
        """Make each transition in turn; the state reached. Raises LifecycleError naming one that failed."""
        for transition in transitions:
            if not self.change(transition, timeout_s):
                raise LifecycleError(f"{self.target}: {transition} failed (state {self.state()})")
        return self.state()
