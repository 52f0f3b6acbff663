"""clusterlm.generate"""
