"""`ccserver`: the remote CLI (docs/cli.md).

A client program of the management API (docs/api.md §2): it gets an admin
token at the server's token endpoint and speaks HTTP only. It never imports
the server's own modules (models, services, schemas); an import-linter
contract (.importlinter) says so, so the server's rules live once, on the
server, and the CLI reports what the server answers.

Modules: `errors` (exit codes), `config` (profiles and the environment),
`http` (the token and the API calls), `output` (table, JSON, YAML),
`options` (checks of option values), `declarative` (apply and export) and
`cli` (the click commands).
"""
