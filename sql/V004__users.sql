-- Read model of the users projection (projections/users.c).

CREATE TABLE IF NOT EXISTS read_model.users (
    id                uuid PRIMARY KEY,
    email             text NOT NULL,
    first_name        text NOT NULL,
    last_name         text NOT NULL,
    role              text NOT NULL DEFAULT 'user',
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    email_verified    boolean NOT NULL DEFAULT false,
    email_verified_at timestamptz,
    last_login_at     timestamptz,
    login_count       bigint NOT NULL DEFAULT 0,
    created_at        timestamptz,
    updated_at        timestamptz
);

CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower_key ON read_model.users (lower(email));
