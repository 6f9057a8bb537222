from __future__ import annotations

from meshkit.settings import MeshSettings
from services.agent.tools import calculator


class AgentSettings(MeshSettings):
    agent_default_max_steps: int = 10
    agent_max_steps_limit: int = 50
    # Longest a run may take, all steps together.
    agent_deadline_seconds: float = 60.0
    # A reasoning model for ReAct and for tasks the offline planner cannot
    # plan: an OpenAI-compatible server with tool calling, models in fallback order.
    agent_reasoner_url: str | None = None
    agent_reasoner_models: str = ""
    agent_reasoner_api_key: str = ""
    agent_reasoner_timeout_seconds: float = 60.0
    # USD per million prompt and completion tokens, by model, for the run's
    # cost: {"gpt-4o-mini": [0.15, 0.6]}.
    agent_reasoner_prices: dict[str, tuple[float, float]] = {}
    # How often a model-written plan is made again after a step fails.
    agent_max_replans: int = 2
    # Hosts http_get may fetch from, comma-separated; empty turns http_get off.
    agent_http_allowed_hosts: str = ""
    # Ports http_get may connect to: the web's own, so that an allowed host's
    # other services (SSH, databases, admin consoles) stay out of reach.
    agent_http_allowed_ports: str = "80,443"
    # Networks http_get may reach although they are not public (CIDR, comma-separated),
    # e.g. an on-premises service; empty: public addresses only. Tests use 127.0.0.1/32.
    agent_http_allowed_networks: str = ""
    # A tool that fails this many times in a row is not called for the cool-down.
    tool_breaker_threshold: int = 3
    tool_breaker_cool_down_seconds: float = 30.0
    # Tools that compute (the calculator) run in worker processes under these limits, so that work
    # its bounds did not foresee is killed there and never stalls the event loop. A bounded calculation
    # takes microseconds: 1 s of CPU is far beyond any, and a worker's interpreter holds about 20 MiB,
    # leaving most of 256 MiB for the work. One worker: the pod has about one core to spare, and a
    # call waits for a free worker within its own timeout.
    agent_tool_sandbox_cpu_seconds: float = 1.0
    agent_tool_sandbox_memory_mib: int = 256
    agent_tool_sandbox_workers: int = 1
    # Digits of the largest whole number a calculator step may make (see calculator.MAX_WORKING_DIGITS
    # for why 1000); more makes single steps costlier, up to the sandbox's CPU limit.
    agent_calculator_max_digits: int = calculator.MAX_WORKING_DIGITS
