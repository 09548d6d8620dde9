"""The demo a newcomer gets from ``make up``: synthetic sites, the first pipeline runs, one login per role.

May import any hub package (it drives them all), and ``medimg_kernel``.
"""
