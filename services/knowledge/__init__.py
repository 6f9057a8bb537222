"""The knowledge service: knowledge bases, documents and their ingestion."""
