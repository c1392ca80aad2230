"""Tests of the web pages (service.web)."""
