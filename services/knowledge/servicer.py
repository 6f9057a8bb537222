"""KnowledgeService over gRPC: translates protobuf to the domain and back."""

from __future__ import annotations

from collections.abc import AsyncIterator

from meshkit.auth import current_principal
from meshkit.errors import InvalidArgument
from meshkit.protos import timestamp
from sagemesh.knowledge.v1 import knowledge_pb2 as pb
from sagemesh.knowledge.v1 import knowledge_pb2_grpc
from services.knowledge.domain import Document, DocumentStatus, KnowledgeBase
from services.knowledge.library import Library, Upload
from services.knowledge.parsers import supported_types

STATUSES = {
    DocumentStatus.PENDING: pb.DOCUMENT_STATUS_PENDING,
    DocumentStatus.PARSING: pb.DOCUMENT_STATUS_PARSING,
    DocumentStatus.CHUNKING: pb.DOCUMENT_STATUS_CHUNKING,
    DocumentStatus.INDEXING: pb.DOCUMENT_STATUS_INDEXING,
    DocumentStatus.INDEXED: pb.DOCUMENT_STATUS_INDEXED,
    DocumentStatus.FAILED: pb.DOCUMENT_STATUS_FAILED,
}



def knowledge_base_message(kb: KnowledgeBase) -> pb.KnowledgeBase:
    return pb.KnowledgeBase(
        id=kb.id, name=kb.name, display_name=kb.display_name, description=kb.description,
        chunking=pb.ChunkingConfig(max_tokens=kb.chunk_max_tokens, overlap_tokens=kb.chunk_overlap_tokens),
        document_count=kb.document_count, created_at=timestamp(kb.created_at),
        updated_at=timestamp(kb.updated_at),
    )


def _timings(document: Document) -> pb.IngestionTimings:
    t = document.timings
    return pb.IngestionTimings(parse_ms=t.parse_ms, chunk_ms=t.chunk_ms, index_ms=t.index_ms, total_ms=t.total_ms)


def document_message(document: Document) -> pb.Document:
    return pb.Document(
        id=document.id, kb_id=document.kb_id, filename=document.filename, content_type=document.content_type,
        size_bytes=document.size_bytes, sha256=document.sha256, status=STATUSES[document.status],
        chunk_count=document.chunk_count, vector_count=document.vector_count, error=document.error,
        timings=_timings(document), metadata=document.metadata, created_at=timestamp(document.created_at),
        updated_at=timestamp(document.updated_at), warnings=document.warnings,
    )


def status_message(document: Document) -> pb.GetDocumentStatusResponse:
    return pb.GetDocumentStatusResponse(
        document_id=document.id, status=STATUSES[document.status], chunk_count=document.chunk_count,
        vector_count=document.vector_count, error=document.error, timings=_timings(document),
        updated_at=timestamp(document.updated_at), warnings=document.warnings,
    )


async def _file_pieces(requests: AsyncIterator[pb.UploadDocumentRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        if request.WhichOneof("payload") != "data":
            raise InvalidArgument("send metadata once, first, then only data", field="metadata")
        yield request.data


class KnowledgeServicer(knowledge_pb2_grpc.KnowledgeServiceServicer):
    def __init__(self, library: Library) -> None:
        self.library = library

    async def CreateKnowledgeBase(self, request, context) -> pb.CreateKnowledgeBaseResponse:
        kb = request.knowledge_base
        created = await self.library.create_knowledge_base(
            current_principal().tenant_id, kb.name, kb.display_name, kb.description, kb.chunking.max_tokens,
            kb.chunking.overlap_tokens,
        )
        return pb.CreateKnowledgeBaseResponse(knowledge_base=knowledge_base_message(created))

    async def GetKnowledgeBase(self, request, context) -> pb.GetKnowledgeBaseResponse:
        kb = await self.library.knowledge_base(current_principal().tenant_id, request.kb_id)
        return pb.GetKnowledgeBaseResponse(knowledge_base=knowledge_base_message(kb))

    async def ListKnowledgeBases(self, request, context) -> pb.ListKnowledgeBasesResponse:
        page = await self.library.list_knowledge_bases(current_principal().tenant_id, request.page_size,
                                                       request.page_token, request.name)
        return pb.ListKnowledgeBasesResponse(knowledge_bases=[knowledge_base_message(kb) for kb in page.items],
                                             next_page_token=page.next_page_token)

    async def DeleteKnowledgeBase(self, request, context) -> pb.DeleteKnowledgeBaseResponse:
        await self.library.delete_knowledge_base(current_principal().tenant_id, request.kb_id)
        return pb.DeleteKnowledgeBaseResponse()

    async def UploadDocument(self, request_iterator, context) -> pb.UploadDocumentResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("payload") != "metadata":
            raise InvalidArgument("the first message must carry the document's metadata", field="metadata")
        meta = first.metadata
        uploaded = await self.library.upload(
            current_principal().tenant_id,
            Upload(meta.kb_id, meta.filename, meta.content_type, dict(meta.metadata)),
            _file_pieces(requests),
        )
        return pb.UploadDocumentResponse(document_id=uploaded.document.id, status=STATUSES[uploaded.document.status],
                                         duplicate=uploaded.duplicate, retried=uploaded.retried)

    async def GetDocument(self, request, context) -> pb.GetDocumentResponse:
        document = await self.library.document(current_principal().tenant_id, request.document_id)
        return pb.GetDocumentResponse(document=document_message(document))

    async def GetDocumentStatus(self, request, context) -> pb.GetDocumentStatusResponse:
        return status_message(await self.library.document(current_principal().tenant_id, request.document_id))

    async def WatchDocumentStatus(self, request, context) -> AsyncIterator[pb.WatchDocumentStatusResponse]:
        async for document in self.library.watch(current_principal().tenant_id, request.document_id):
            yield pb.WatchDocumentStatusResponse(status=status_message(document))

    async def ListDocuments(self, request, context) -> pb.ListDocumentsResponse:
        page = await self.library.list_documents(current_principal().tenant_id, request.kb_id, request.page_size,
                                                 request.page_token, request.sha256)
        return pb.ListDocumentsResponse(documents=[document_message(d) for d in page.items],
                                        next_page_token=page.next_page_token)

    async def DeleteDocument(self, request, context) -> pb.DeleteDocumentResponse:
        await self.library.delete_document(current_principal().tenant_id, request.document_id)
        return pb.DeleteDocumentResponse()

    async def ReparseDocument(self, request, context) -> pb.ReparseDocumentResponse:
        document = await self.library.reparse(current_principal().tenant_id, request.document_id)
        return pb.ReparseDocumentResponse(document_id=document.id, status=STATUSES[document.status])

    async def ListSupportedTypes(self, request, context) -> pb.ListSupportedTypesResponse:
        return pb.ListSupportedTypesResponse(types=[
            pb.SupportedType(content_type=t.content_type, extensions=t.extensions, aliases=t.aliases)
            for t in supported_types()])
