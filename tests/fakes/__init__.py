"""Stateful fakes of cloud APIs, driven by the real SDKs over HTTP on 127.0.0.1."""
