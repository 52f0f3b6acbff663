"""clusterlm.distributed"""
