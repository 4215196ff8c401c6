# microfang errors, shared by the board and the host.
#
# One small hierarchy: the CLI prints any MicrofangError as a one-line message without a
# traceback; anything else is a bug and keeps its traceback.


class MicrofangError(Exception):
    """An expected failure caused by input or environment, reported in one line."""


class ManifestError(MicrofangError):
    """An agent manifest field is missing or invalid."""


class WasmError(MicrofangError):
    """A wasm module is malformed or breaks the agent ABI."""


class BundleError(MicrofangError):
    """An agent bundle is malformed, forged or does not match its digest."""


class SandboxError(MicrofangError):
    """An agent cannot be spawned or asked for something outside its sandbox."""


class AgentFault(MicrofangError):
    """An agent trapped, ran out of fuel or broke a host-function rule.

    `agent_id` names the agent and `reason` is one of "trap", "fuel", "slice" (one event ran
    past its time slice), "host".
    """

    def __init__(self, agent_id, reason, message):
        super().__init__("agent %s: %s" % (agent_id, message))
        self.agent_id = agent_id
        self.reason = reason
