"""Response: Defender for Endpoint isolation, Entra ID user actions, IP blocking, with guardrails."""
