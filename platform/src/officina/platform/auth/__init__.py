"""Users, teams, memberships, API tokens, and the one access check every route uses."""
