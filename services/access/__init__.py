"""Access: users, teams, roles, API tokens, permission checks, audit."""
