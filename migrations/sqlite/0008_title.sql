-- A run's title, made from its inputs when it starts (a flow's `title:`):
-- how the run page and the API name it, and what a search finds.
ALTER TABLE runs ADD COLUMN title TEXT;
