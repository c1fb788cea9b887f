"""The usage read model: fold (pure), table (the outbox), query (plain SQL), sync (Supabase)."""
