"""Local development: function host, loopback emulators, playbook runner. Never imported by production code."""
