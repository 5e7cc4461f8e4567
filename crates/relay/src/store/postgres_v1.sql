-- agentwire relay schema, version 1: the queues of a relay cluster.
-- Times are milliseconds since the Unix epoch; keys and ids are raw bytes.

CREATE TABLE agentwire.meta (
    key text PRIMARY KEY,
    value bytea NOT NULL
);

-- Envelopes waiting for their recipient. `seq` orders each recipient's
-- queue; CACHE 1 (the default) hands numbers out in the order they are
-- asked for, which the queue locks turn into commit order.
CREATE TABLE agentwire.envelopes (
    seq bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    recipient bytea NOT NULL,
    id bytea NOT NULL,
    sender bytea NOT NULL,
    payload bytea NOT NULL,
    received_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    UNIQUE (recipient, id)
);
-- Payloads are ciphertext: compressing them is wasted work.
ALTER TABLE agentwire.envelopes ALTER COLUMN payload SET STORAGE EXTERNAL;
CREATE INDEX envelopes_by_recipient ON agentwire.envelopes (recipient, seq);
CREATE INDEX envelopes_by_expiry ON agentwire.envelopes (expires_at);
CREATE INDEX envelopes_by_sender ON agentwire.envelopes (recipient, sender);

-- Tombstones of acknowledged envelopes, kept until they would have expired,
-- so that a resend of the same id is recognised as a duplicate.
CREATE TABLE agentwire.delivered (
    recipient bytea NOT NULL,
    id bytea NOT NULL,
    sender bytea NOT NULL,
    forget_at bigint NOT NULL,
    PRIMARY KEY (recipient, id)
);
CREATE INDEX delivered_by_forget ON agentwire.delivered (forget_at);

-- Notices for senders whose envelopes expired undelivered.
CREATE TABLE agentwire.expired (
    sender bytea NOT NULL,
    recipient bytea NOT NULL,
    id bytea NOT NULL,
    expired_at bigint NOT NULL,
    forget_at bigint NOT NULL,
    PRIMARY KEY (sender, recipient, id)
);
CREATE INDEX expired_by_forget ON agentwire.expired (forget_at);
CREATE INDEX expired_by_time ON agentwire.expired (expired_at);

-- Each recipient's queue length. Its row is also the queue's lock: every
-- change to a queue locks it first.
CREATE TABLE agentwire.depth (
    recipient bytea PRIMARY KEY,
    queued bigint NOT NULL
);

-- The opt-in directory.
CREATE TABLE agentwire.directory (
    key bytea PRIMARY KEY,
    published_at bigint NOT NULL,
    listed_until bigint NOT NULL,
    forget_at bigint NOT NULL,
    entry bytea NOT NULL
);
CREATE INDEX directory_by_forget ON agentwire.directory (forget_at);
CREATE TABLE agentwire.directory_tags (
    tag text NOT NULL,
    key bytea NOT NULL REFERENCES agentwire.directory (key) ON DELETE CASCADE,
    PRIMARY KEY (tag, key)
);
CREATE INDEX directory_tags_by_key ON agentwire.directory_tags (key);

-- Stores an envelope. Answers 0 stored, 1 duplicate (same sender, same id,
-- queued or delivered), 2 id conflict (another sender's id), 3 queue full,
-- 4 this sender's share of the queue full.
CREATE FUNCTION agentwire.put(
    p_recipient bytea, p_id bytea, p_sender bytea, p_payload bytea,
    p_received_at bigint, p_expires_at bigint,
    p_max_queue bigint, p_max_per_sender bigint, p_node text
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_depth bigint;
    v_existing bytea;
    v_from_sender bigint := 0;
BEGIN
    -- Lock the queue and count this envelope in, in one step (the common
    -- case); the refusals below take it out again.
    INSERT INTO agentwire.depth AS d (recipient, queued) VALUES (p_recipient, 1)
        ON CONFLICT (recipient) DO UPDATE SET queued = d.queued + 1
        RETURNING d.queued - 1 INTO v_depth;
    SELECT e.sender INTO v_existing FROM agentwire.envelopes e
        WHERE e.recipient = p_recipient AND e.id = p_id;
    IF NOT FOUND THEN
        SELECT t.sender INTO v_existing FROM agentwire.delivered t
            WHERE t.recipient = p_recipient AND t.id = p_id;
    END IF;
    IF v_existing IS NULL AND v_depth < p_max_queue AND v_depth >= p_max_per_sender THEN
        -- One sender's share, counted only once the whole queue is that long.
        SELECT count(*) INTO v_from_sender FROM agentwire.envelopes e
            WHERE e.recipient = p_recipient AND e.sender = p_sender;
    END IF;
    IF v_existing IS NOT NULL OR v_depth >= p_max_queue OR v_from_sender >= p_max_per_sender THEN
        IF v_depth = 0 THEN
            DELETE FROM agentwire.depth WHERE recipient = p_recipient;
        ELSE
            UPDATE agentwire.depth SET queued = queued - 1 WHERE recipient = p_recipient;
        END IF;
        IF v_existing IS NOT NULL THEN
            RETURN CASE WHEN v_existing = p_sender THEN 1 ELSE 2 END;
        ELSIF v_depth >= p_max_queue THEN
            RETURN 3;
        ELSE
            RETURN 4;
        END IF;
    END IF;
    INSERT INTO agentwire.envelopes (recipient, id, sender, payload, received_at, expires_at)
        VALUES (p_recipient, p_id, p_sender, p_payload, p_received_at, p_expires_at);
    PERFORM pg_notify('agentwire_deliver', p_node || ':' || encode(p_recipient, 'hex'));
    RETURN 0;
END
$$;

-- The recipient acknowledges these ids: delete them from its queue, keeping
-- tombstones. Answers how many were removed.
CREATE FUNCTION agentwire.ack(p_recipient bytea, p_ids bytea[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_removed integer;
BEGIN
    PERFORM 1 FROM agentwire.depth d WHERE d.recipient = p_recipient FOR UPDATE;
    WITH gone AS (
        DELETE FROM agentwire.envelopes e
            WHERE e.recipient = p_recipient AND e.id = ANY (p_ids)
            RETURNING e.id, e.sender, e.expires_at
    ), kept AS (
        INSERT INTO agentwire.delivered (recipient, id, sender, forget_at)
            SELECT p_recipient, g.id, g.sender, g.expires_at FROM gone g
            ON CONFLICT (recipient, id) DO NOTHING
    )
    SELECT count(*) INTO v_removed FROM gone;
    IF v_removed > 0 THEN
        UPDATE agentwire.depth SET queued = queued - v_removed WHERE recipient = p_recipient;
        DELETE FROM agentwire.depth WHERE recipient = p_recipient AND queued <= 0;
    END IF;
    RETURN v_removed;
END
$$;

-- Stores a directory entry. Answers 0 stored, 1 stale (the key has one as
-- new or newer), 2 full (the directory lists p_max_entries other keys).
CREATE FUNCTION agentwire.list(
    p_key bytea, p_published_at bigint, p_listed_until bigint, p_forget_at bigint,
    p_entry bytea, p_tags text[], p_max_entries bigint
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_published bigint;
    v_exists boolean;
    v_count bigint;
BEGIN
    SELECT d.published_at INTO v_published FROM agentwire.directory d
        WHERE d.key = p_key FOR UPDATE;
    v_exists := FOUND;
    IF NOT v_exists THEN
        -- New keys one at a time, so that the limit holds across nodes.
        PERFORM pg_advisory_xact_lock(24951, 3);
        SELECT d.published_at INTO v_published FROM agentwire.directory d
            WHERE d.key = p_key FOR UPDATE;
        v_exists := FOUND;
    END IF;
    IF v_exists THEN
        IF v_published >= p_published_at THEN
            RETURN 1;
        END IF;
    ELSE
        SELECT count(*) INTO v_count FROM agentwire.directory;
        IF v_count >= p_max_entries THEN
            RETURN 2;
        END IF;
    END IF;
    INSERT INTO agentwire.directory AS d (key, published_at, listed_until, forget_at, entry)
        VALUES (p_key, p_published_at, p_listed_until, p_forget_at, p_entry)
        ON CONFLICT (key) DO UPDATE SET
            published_at = excluded.published_at,
            listed_until = excluded.listed_until,
            forget_at = excluded.forget_at,
            entry = excluded.entry;
    DELETE FROM agentwire.directory_tags t WHERE t.key = p_key;
    INSERT INTO agentwire.directory_tags (tag, key)
        SELECT DISTINCT u.tag, p_key FROM unnest(p_tags) AS u(tag)
        ON CONFLICT DO NOTHING;
    RETURN 0;
END
$$;

-- Moves up to p_limit envelopes whose time is up into notices (forgotten at
-- p_notice_forget_at), forgets old tombstones, notices and directory
-- entries, and answers the new notices. One node at a time: the others
-- answer nothing.
CREATE FUNCTION agentwire.sweep(p_now bigint, p_notice_forget_at bigint, p_limit integer, p_node text)
RETURNS TABLE (o_sender bytea, o_recipient bytea, o_id bytea) LANGUAGE plpgsql AS $$
DECLARE
    v_seqs bigint[];
    v_senders bytea[];
    v_recipients bytea[];
    v_ids bytea[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(24951, 2) THEN
        RETURN;
    END IF;
    SELECT array_agg(due.seq) INTO v_seqs FROM (
        SELECT e.seq FROM agentwire.envelopes e
            WHERE e.expires_at <= p_now ORDER BY e.expires_at LIMIT p_limit
    ) due;
    IF v_seqs IS NOT NULL THEN
        -- The queues' locks, in the writers' order.
        PERFORM 1 FROM agentwire.depth d
            WHERE d.recipient IN (SELECT e.recipient FROM agentwire.envelopes e WHERE e.seq = ANY (v_seqs))
            ORDER BY d.recipient FOR UPDATE;
        WITH gone AS (
            DELETE FROM agentwire.envelopes e WHERE e.seq = ANY (v_seqs)
                RETURNING e.sender, e.recipient, e.id
        )
        SELECT array_agg(g.sender), array_agg(g.recipient), array_agg(g.id)
            INTO v_senders, v_recipients, v_ids FROM gone g;
    END IF;
    IF v_ids IS NOT NULL THEN
        UPDATE agentwire.depth d SET queued = d.queued - c.n
            FROM (SELECT r, count(*) AS n FROM unnest(v_recipients) AS u(r) GROUP BY r) c
            WHERE d.recipient = c.r;
        DELETE FROM agentwire.depth d WHERE d.recipient = ANY (v_recipients) AND d.queued <= 0;
        INSERT INTO agentwire.expired AS x (sender, recipient, id, expired_at, forget_at)
            SELECT u.s, u.r, u.i, p_now, p_notice_forget_at
                FROM unnest(v_senders, v_recipients, v_ids) AS u(s, r, i)
            ON CONFLICT (sender, recipient, id) DO UPDATE SET
                expired_at = excluded.expired_at,
                forget_at = excluded.forget_at;
        PERFORM pg_notify('agentwire_notice', p_node || ':' || encode(s.sender, 'hex'))
            FROM (SELECT DISTINCT u.sender FROM unnest(v_senders) AS u(sender)) s;
    END IF;
    DELETE FROM agentwire.delivered t WHERE t.forget_at <= p_now;
    DELETE FROM agentwire.expired x WHERE x.forget_at <= p_now;
    DELETE FROM agentwire.directory d WHERE d.forget_at <= p_now;
    IF v_ids IS NOT NULL THEN
        RETURN QUERY SELECT u.s, u.r, u.i FROM unnest(v_senders, v_recipients, v_ids) AS u(s, r, i);
    END IF;
END
$$;
