"""The platform-neutral core: a photo in, personalised hashtags out, answers remembered.

`service.HashtagService` is what every adapter calls; `personalize` and `trust` rank for one
person; `ratelimit` keeps one person from flooding the model.
"""
