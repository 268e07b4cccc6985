"""Orchestration: Teams / Slack notifications, approvals and closing incidents."""
