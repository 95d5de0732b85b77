"""Asyncio client SDK for the jtel ACD Dialler Contacts REST API."""
