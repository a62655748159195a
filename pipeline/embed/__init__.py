"""Sentence embeddings: the embedder, its vector store on disk, the mining pool and its index."""
