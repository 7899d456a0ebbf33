"""Running the bot for months: health and metrics, logs without secrets, and new heads while
it runs (`checkpoints` swaps them in, `learning` learns them from answers)."""
