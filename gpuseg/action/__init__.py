"""From segments to actions: lifetime value, uplift from past campaigns, a budgeted contact plan.

Modules: :mod:`.library` (offers and channels from ``configs/offers.yaml``), :mod:`.features`
(the per-subscriber feature matrix of a run), :mod:`.ltv` (lifetime value), :mod:`.customer_base`
(its BG/NBD and shifted-beta-geometric baseline), :mod:`.uplift` (treatment effects and Qini
curves), :mod:`.contact` (consent, do-not-disturb, caps, dates), :mod:`.plan` (the plan itself)
and :mod:`.evaluate` (measurement on the synthetic world).
"""
