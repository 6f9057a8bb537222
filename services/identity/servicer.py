"""IdentityService over gRPC: translates protobuf to the domain and back."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from meshkit.auth import current_principal
from meshkit.protos import timestamp
from sagemesh.identity.v1 import identity_pb2 as pb
from sagemesh.identity.v1 import identity_pb2_grpc
from services.identity.accounts import REVOCATIONS_PAGE, Accounts
from services.identity.domain import IssuedTokens, Role, User

_ROLES = {Role.MEMBER: pb.ROLE_MEMBER, Role.ADMIN: pb.ROLE_ADMIN}


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def user_message(user: User) -> pb.User:
    return pb.User(
        id=user.id,
        tenant_id=user.tenant_id,
        tenant_name=user.tenant_name,
        email=user.email,
        display_name=user.display_name,
        role=_ROLES[user.role],
        created_at=timestamp(user.created_at),
    )


def _token_fields(tokens: IssuedTokens) -> dict:
    return {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
        "refresh_expires_in": tokens.refresh_expires_in,
        "user": user_message(tokens.user),
    }


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def Register(self, request: pb.RegisterRequest, context) -> pb.RegisterResponse:
        user = await self.accounts.register(
            request.email, request.password, request.display_name, request.tenant_name
        )
        return pb.RegisterResponse(user=user_message(user))

    async def Login(self, request: pb.LoginRequest, context) -> pb.LoginResponse:
        tokens = await self.accounts.login(request.email, request.password, request.tenant_name)
        return pb.LoginResponse(**_token_fields(tokens))

    async def RefreshToken(self, request: pb.RefreshTokenRequest, context) -> pb.RefreshTokenResponse:
        tokens = await self.accounts.refresh(request.refresh_token)
        return pb.RefreshTokenResponse(**_token_fields(tokens))

    async def Logout(self, request: pb.LogoutRequest, context) -> pb.LogoutResponse:
        await self.accounts.logout(request.refresh_token)
        return pb.LogoutResponse()

    async def ValidateToken(
        self, request: pb.ValidateTokenRequest, context
    ) -> pb.ValidateTokenResponse:
        principal = await self.accounts.validate(request.access_token)
        expires_at = _stamp(int(principal.expires_at))
        return pb.ValidateTokenResponse(
            user_id=principal.user_id,
            tenant_id=principal.tenant_id,
            email=principal.email,
            role=_ROLES.get(Role(principal.role), pb.ROLE_UNSPECIFIED),
            session_id=principal.session_id,
            expires_at=expires_at,
        )

    async def ListRevokedSessions(
        self, request: pb.ListRevokedSessionsRequest, context
    ) -> pb.ListRevokedSessionsResponse:
        since = request.revoked_after.ToNanoseconds() / 1e9 if request.HasField("revoked_after") else None
        page, _ = await self.accounts.revoked_since(since)
        return pb.ListRevokedSessionsResponse(
            sessions=[pb.RevokedSession(session_id=r.session_id, revoked_at=_stamp(r.revoked_at),
                                        tokens_expire_at=_stamp(r.tokens_expire_at)) for r in page],
            limit=REVOCATIONS_PAGE,
        )

    async def GetMe(self, request: pb.GetMeRequest, context) -> pb.GetMeResponse:
        user = await self.accounts.user(current_principal().user_id)
        return pb.GetMeResponse(user=user_message(user))
