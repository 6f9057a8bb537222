"""AgentService over gRPC: translates protobuf to the domain and back."""

from __future__ import annotations

from google.protobuf.struct_pb2 import Struct

from meshkit.auth import current_principal
from meshkit.protos import timestamp
from sagemesh.agent.v1 import agent_pb2 as pb
from sagemesh.agent.v1 import agent_pb2_grpc
from services.agent.agents import Agents, Caller, Run
from services.agent.domain import Mode, PlanStep, Status, StepType, TraceStep

MODES = {Mode.PLAN_EXECUTE: pb.AGENT_MODE_PLAN_EXECUTE, Mode.REACT: pb.AGENT_MODE_REACT}
STATUSES = {Status.RUNNING: pb.RUN_STATUS_RUNNING, Status.COMPLETED: pb.RUN_STATUS_COMPLETED,
            Status.FAILED: pb.RUN_STATUS_FAILED, Status.STOPPED: pb.RUN_STATUS_STOPPED}
STEP_TYPES = {StepType.PLAN: pb.STEP_TYPE_PLAN, StepType.THOUGHT: pb.STEP_TYPE_THOUGHT,
              StepType.ACTION: pb.STEP_TYPE_ACTION, StepType.REFLECTION: pb.STEP_TYPE_REFLECTION,
              StepType.FINAL_ANSWER: pb.STEP_TYPE_FINAL_ANSWER}


def _caller() -> Caller:
    principal = current_principal()
    return Caller(principal.tenant_id, principal.user_id)


def _struct(value: dict) -> Struct:
    struct = Struct()
    struct.update(value)
    return struct


def plan_message(plan: list[PlanStep]) -> list[pb.PlanStep]:
    return [pb.PlanStep(step=s.step, description=s.description, tool=s.tool) for s in plan]


def step_message(step: TraceStep) -> pb.TraceStep:
    return pb.TraceStep(step=step.step, step_type=STEP_TYPES[step.type], thought=step.thought, action=step.action,
                        action_input=_struct(step.action_input), observation=step.observation, error=step.error,
                        latency_ms=step.latency_ms)


def run_message(run: Run) -> pb.AgentRun:
    stats = run.stats
    return pb.AgentRun(
        task_id=run.id, task=run.task, mode=MODES[run.mode], status=STATUSES[run.status],
        status_reason=run.reason, plan=plan_message(run.plan),
        execution_trace=[step_message(s) for s in run.trace], final_result=run.result,
        stats=pb.ExecutionStats(steps=stats.steps, tool_calls=stats.tool_calls, duration_ms=stats.duration_ms,
                                prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens,
                                estimated_cost_usd=stats.cost_usd),
        created_at=timestamp(run.created_at),
    )


def _execution(agents: Agents, request):
    mode = Mode.REACT if request.mode == pb.AGENT_MODE_REACT else Mode.PLAN_EXECUTE
    return agents.execute(_caller(), request.task, mode, list(request.tools), request.max_steps,
                          request.enable_reflection, list(request.kb_ids))


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, agents: Agents) -> None:
        self.agents = agents

    async def Execute(self, request, context) -> pb.ExecuteResponse:
        async for event in _execution(self.agents, request):
            if isinstance(event, Run):
                return pb.ExecuteResponse(run=run_message(event))
        raise AssertionError("an execution always ends with its run")

    async def StreamExecute(self, request, context):
        async for event in _execution(self.agents, request):
            if isinstance(event, Run):
                yield pb.StreamExecuteResponse(completed=run_message(event))
            elif isinstance(event, list):
                yield pb.StreamExecuteResponse(plan=pb.PlanUpdate(plan=plan_message(event)))
            else:
                yield pb.StreamExecuteResponse(step=step_message(event))

    async def GetRun(self, request, context) -> pb.GetRunResponse:
        return pb.GetRunResponse(run=run_message(await self.agents.get(_caller(), request.task_id)))

    async def ListTools(self, request, context) -> pb.ListToolsResponse:
        return pb.ListToolsResponse(tools=[
            pb.Tool(name=tool.name, description=tool.description, input_schema=_struct(tool.input_schema),
                    enabled=tool.enabled, breaker_state=state)
            for tool, state in self.agents.tools()
        ])
