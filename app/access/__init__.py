"""Who may do what: API keys, their scopes, and the actor a change is recorded under.

Knows nothing of HTTP (``app/api/auth.py`` reads the ``Authorization`` header and asks this
package) and nothing of labels (the knowledge store records the actor's name in its audit trail).
"""
